-- What a call costs in micro-USD: each class of its tokens (input, cached input, cache writes,
-- output, reasoning) times its price, summed and rounded up once (prices in micro-USD per million
-- tokens).
CREATE OR REPLACE FUNCTION meter_cost_micros(
    p_input bigint, p_cached_input bigint, p_cache_write bigint, p_output bigint, p_reasoning bigint,
    p_input_price bigint, p_cached_input_price bigint, p_cache_write_price bigint, p_output_price bigint,
    p_reasoning_price bigint
) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_input * p_input_price + p_cached_input * p_cached_input_price + p_cache_write * p_cache_write_price
        + p_output * p_output_price + p_reasoning * p_reasoning_price + 999999) / 1000000
$$;
