-- What a call costs in balance tokens: each class of its tokens (input, cached input, cache
-- writes, output, reasoning) times its weight, summed and rounded up once (weights in millionths
-- of a balance token per token). Reserve prices its worst case with it, Commit the usage.
CREATE OR REPLACE FUNCTION meter_weighted_tokens(
    p_input bigint, p_cached_input bigint, p_cache_write bigint, p_output bigint, p_reasoning bigint,
    p_input_weight bigint, p_cached_input_weight bigint, p_cache_write_weight bigint, p_output_weight bigint,
    p_reasoning_weight bigint
) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_input * p_input_weight + p_cached_input * p_cached_input_weight + p_cache_write * p_cache_write_weight
        + p_output * p_output_weight + p_reasoning * p_reasoning_weight + 999999) / 1000000
$$;
