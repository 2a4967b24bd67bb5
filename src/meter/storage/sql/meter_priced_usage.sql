-- A hold with a call's usage set on it and priced at the prices and weights the hold pinned at
-- Reserve: charged_tokens (meter_weighted_tokens) and cost_micros (meter_cost_micros), each
-- rounded once over every token class. Commit, ChargeUsage and a charged expiry price usage
-- with it; the caller stores the hold (meter_settle).
CREATE OR REPLACE FUNCTION meter_priced_usage(
    p_hold holds, p_input bigint, p_cached_input bigint, p_cache_write bigint, p_output bigint, p_reasoning bigint
) RETURNS holds LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    p_hold.usage_input_tokens := p_input;
    p_hold.usage_cached_input_tokens := p_cached_input;
    p_hold.usage_cache_write_tokens := p_cache_write;
    p_hold.usage_output_tokens := p_output;
    p_hold.usage_reasoning_tokens := p_reasoning;
    p_hold.charged_tokens := meter_weighted_tokens(p_input, p_cached_input, p_cache_write, p_output, p_reasoning,
        p_hold.input_weight, p_hold.cached_input_weight, p_hold.cache_write_weight, p_hold.output_weight,
        p_hold.reasoning_weight);
    p_hold.cost_micros := meter_cost_micros(p_input, p_cached_input, p_cache_write, p_output, p_reasoning,
        p_hold.input_price, p_hold.cached_input_price, p_hold.cache_write_price, p_hold.output_price,
        p_hold.reasoning_price);
    RETURN p_hold;
END;
$$;
