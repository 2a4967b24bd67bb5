-- Commit several holds in one transaction (coalescing: the Commits that arrived while another
-- call was in flight). Each is meter_commit, the one home of Commit's rules, with its own
-- arguments (the arrays, one element per call) and the shared clock, after the batch's account
-- locks (meter_lock_accounts), in arrival order within an account. A refusal is an outcome like
-- any other and leaves its neighbours alone; a hold committed twice answers the second time as a
-- replay. Rows come back in the order they ran, each with n, its place in the arrays (from 1).
CREATE OR REPLACE FUNCTION meter_commit_many(
    p_accounts text[], p_holds uuid[], p_inputs bigint[], p_outputs bigint[],
    p_cached_inputs bigint[], p_cache_writes bigint[], p_reasonings bigint[], p_clock_offset double precision,
    p_callers text[]
)
RETURNS TABLE (
    n integer, outcome text, reused_field text, charged bigint, cost bigint, unbilled bigint, late boolean,
    balance meter_balance_row, counted_budgets jsonb
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_n integer;
BEGIN
    PERFORM meter_lock_accounts(p_accounts);
    FOR v_n IN SELECT i FROM generate_subscripts(p_accounts, 1) AS i ORDER BY p_accounts[i], i LOOP
        RETURN QUERY SELECT v_n, r.* FROM meter_commit(p_accounts[v_n], p_holds[v_n],
            p_inputs[v_n], p_outputs[v_n], p_cached_inputs[v_n], p_cache_writes[v_n], p_reasonings[v_n],
            p_clock_offset, p_callers[v_n]) AS r;
    END LOOP;
END;
$$;
