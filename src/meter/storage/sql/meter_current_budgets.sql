-- The budgets of an account that a call with these labels counts against (a label of the call has
-- the budget's value), in budget order, each counting the period starting at p_period_start: a
-- budget still counting an earlier period starts again (nothing used, nothing held, its cap
-- available), once, under its row's lock. Holds of the earlier period no longer count against it
-- (meter_settle_budgets). Found by label through the budgets' unique key: an account may have many.
CREATE OR REPLACE FUNCTION meter_current_budgets(p_account text, p_labels jsonb, p_period_start timestamptz)
RETURNS SETOF budgets LANGUAGE plpgsql AS $$
DECLARE
    v_budget budgets%ROWTYPE;
BEGIN
    FOR v_budget IN
        SELECT g.* FROM jsonb_each_text(p_labels) AS l (key, value)
        JOIN budgets AS g ON g.account_id = p_account AND g.label_key = l.key AND g.label_value = l.value
        ORDER BY g.budget_id
    LOOP
        IF v_budget.period_start <> p_period_start THEN
            SELECT * INTO v_budget FROM budgets AS g
            WHERE g.account_id = p_account AND g.budget_id = v_budget.budget_id FOR UPDATE;
            IF v_budget.period_start <> p_period_start THEN
                PERFORM meter_lock_budget_rows(p_account, v_budget.budget_id);
                UPDATE budget_buckets AS b SET held = 0, used = 0, period_start = p_period_start
                WHERE b.account_id = p_account AND b.budget_id = v_budget.budget_id;
                PERFORM meter_spread_budget(p_account, v_budget.budget_id, v_budget.cap);
                UPDATE budgets AS g SET period_start = p_period_start, updated_at = now()
                WHERE g.account_id = p_account AND g.budget_id = v_budget.budget_id
                RETURNING * INTO v_budget;
            END IF;
        END IF;
        RETURN NEXT v_budget;
    END LOOP;
END;
$$;
