-- Reserve for several calls in one transaction (coalescing: the Reserves that arrived while
-- another call was in flight). Each is meter_reserve, the one home of Reserve's rules, with its
-- own arguments (p_calls, one element per call) and the shared ones (the clock, the plans'
-- limits, the waits), after the batch's account locks (meter_lock_accounts), in arrival order
-- within an account. A refusal is an outcome like any other and leaves its neighbours alone; a
-- request id that comes twice finds the first one's hold (replayed). Rows come back in the order
-- they ran, each with n, its place in the arrays (from 1).
CREATE OR REPLACE FUNCTION meter_reserve_many(
    p_calls meter_reserve_call[], p_clock_offset double precision, p_plans text[], p_requests_per_minute bigint[],
    p_tokens_per_minute bigint[], p_concurrent_holds bigint[], p_wait_ms integer, p_sweep_seconds double precision
)
RETURNS TABLE (
    n integer, outcome text, reservation_id text, held bigint, expires_at timestamptz, catalog_version text,
    status text, reused_field text, limit_name text, limit_value bigint, retry_after double precision,
    required bigint, across boolean, balance meter_balance_row, budget_key text, budget_value text,
    budget_unit text, budget_cap bigint, budget_remaining bigint, budget_required bigint
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_n integer;
BEGIN
    PERFORM meter_lock_accounts(ARRAY(SELECT c.account_id FROM unnest(p_calls) AS c));
    FOR v_n IN SELECT i FROM generate_subscripts(p_calls, 1) AS i ORDER BY (p_calls[i]).account_id, i LOOP
        RETURN QUERY SELECT v_n, r.* FROM meter_reserve(p_calls[v_n], p_clock_offset, p_plans, p_requests_per_minute,
            p_tokens_per_minute, p_concurrent_holds, p_wait_ms, p_sweep_seconds) AS r;
    END LOOP;
END;
$$;
