-- Count a call against its budgets (the hold's parts: p_ids, on rows p_buckets, holding p_held,
-- counting the periods starting at p_periods): p_tokens charged tokens, or p_cost micro-USD, by
-- each budget's unit (negative: a correction giving back what was counted). With p_parked the
-- parts' holds are still on their rows and come off them. What fits a part's hold is counted on
-- its row alone, in one statement; beyond it every row of the budget is locked and what is left
-- evened out over them (meter_spread_budget), so that no row admits a hold the budget as a whole
-- cannot pay for. A budget deleted since, or whose rows count another period than the part's, is
-- left alone.
CREATE OR REPLACE FUNCTION meter_settle_budgets(
    p_account text, p_periods timestamptz[], p_ids bigint[], p_buckets smallint[], p_held bigint[],
    p_parked boolean, p_tokens bigint, p_cost bigint
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_i integer;
    v_held bigint;
    v_unit text;
    v_used bigint;
    v_total bigint;
BEGIN
    FOR v_i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        v_held := CASE WHEN p_parked THEN p_held[v_i] ELSE 0 END;
        UPDATE budget_buckets AS b SET held = b.held - v_held,
            used = b.used + CASE WHEN b.unit = 'tokens' THEN p_tokens ELSE p_cost END,
            available = b.available + v_held - CASE WHEN b.unit = 'tokens' THEN p_tokens ELSE p_cost END
        WHERE b.account_id = p_account AND b.budget_id = p_ids[v_i] AND b.bucket = p_buckets[v_i]
          AND b.period_start = p_periods[v_i] AND CASE WHEN b.unit = 'tokens' THEN p_tokens ELSE p_cost END <= v_held;
        CONTINUE WHEN FOUND;
        SELECT b.unit INTO v_unit FROM budget_buckets AS b
        WHERE b.account_id = p_account AND b.budget_id = p_ids[v_i] AND b.bucket = p_buckets[v_i]
          AND b.period_start = p_periods[v_i];
        CONTINUE WHEN NOT FOUND;  -- deleted, or counting another period
        v_used := CASE WHEN v_unit = 'tokens' THEN p_tokens ELSE p_cost END;
        v_total := meter_lock_budget_rows(p_account, p_ids[v_i]);
        PERFORM FROM budget_buckets AS b
        WHERE b.account_id = p_account AND b.budget_id = p_ids[v_i] AND b.bucket = p_buckets[v_i]
          AND b.period_start = p_periods[v_i];
        CONTINUE WHEN NOT FOUND;  -- it started a new period while this waited for its rows
        PERFORM meter_spread_budget(p_account, p_ids[v_i], v_total + v_held - v_used);
        UPDATE budget_buckets AS b SET held = b.held - v_held, used = b.used + v_used
        WHERE b.account_id = p_account AND b.budget_id = p_ids[v_i] AND b.bucket = p_buckets[v_i];
    END LOOP;
END;
$$;
