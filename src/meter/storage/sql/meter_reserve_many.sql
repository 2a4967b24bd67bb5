-- Reserve for several calls in one transaction (coalescing: the Reserves that arrived while
-- another call was in flight). Each is meter_reserve, the one home of Reserve's rules, with its
-- own arguments (the arrays, one element per call) and the shared ones (the clock, the plans'
-- limits, the waits), after the batch's account locks (meter_lock_accounts), in arrival order
-- within an account. A refusal is an outcome like any other and leaves its neighbours alone; a
-- request id that comes twice finds the first one's hold (replayed). Rows come back in the order
-- they ran, each with n, its place in the arrays (from 1).
CREATE OR REPLACE FUNCTION meter_reserve_many(
    p_accounts text[], p_requests text[], p_holds uuid[], p_models text[], p_inputs bigint[],
    p_max_outputs bigint[], p_ttls integer[], p_labels jsonb[], p_catalog_versions text[],
    p_input_weights bigint[], p_output_weights bigint[], p_input_prices bigint[], p_output_prices bigint[],
    p_cached_input_weights bigint[], p_cache_write_weights bigint[], p_reasoning_weights bigint[],
    p_cached_input_prices bigint[], p_cache_write_prices bigint[], p_reasoning_prices bigint[],
    p_usage_labels jsonb[], p_starts integer[], p_clock_offset double precision, p_plans text[],
    p_requests_per_minute bigint[], p_tokens_per_minute bigint[], p_concurrent_holds bigint[], p_wait_ms integer,
    p_sweep_seconds double precision
)
RETURNS TABLE (
    n integer, outcome text, hold_id uuid, held bigint, expires_at timestamptz, catalog_version text,
    status text, reused_field text, limit_name text, limit_value bigint, retry_after double precision,
    required bigint, across boolean, plan_id text, period_start timestamptz, period_end timestamptz,
    paid_through timestamptz, allowance_total bigint, debt bigint, warned smallint, allowance_remaining bigint,
    purchased_remaining bigint, allowance_held bigint, purchased_held bigint, used bigint, budget_key text,
    budget_value text, budget_unit text, budget_cap bigint, budget_remaining bigint, budget_required bigint
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_n integer;
BEGIN
    PERFORM meter_lock_accounts(p_accounts);
    FOR v_n IN SELECT i FROM generate_subscripts(p_accounts, 1) AS i ORDER BY p_accounts[i], i LOOP
        RETURN QUERY SELECT v_n, r.* FROM meter_reserve(p_accounts[v_n], p_requests[v_n], p_holds[v_n],
            p_models[v_n], p_inputs[v_n], p_max_outputs[v_n], p_ttls[v_n], p_labels[v_n],
            p_catalog_versions[v_n], p_input_weights[v_n], p_output_weights[v_n], p_input_prices[v_n],
            p_output_prices[v_n], p_cached_input_weights[v_n], p_cache_write_weights[v_n],
            p_reasoning_weights[v_n], p_cached_input_prices[v_n], p_cache_write_prices[v_n], p_reasoning_prices[v_n],
            p_usage_labels[v_n], p_starts[v_n], p_clock_offset, p_plans, p_requests_per_minute,
            p_tokens_per_minute, p_concurrent_holds, p_wait_ms, p_sweep_seconds) AS r;
    END LOOP;
END;
$$;
