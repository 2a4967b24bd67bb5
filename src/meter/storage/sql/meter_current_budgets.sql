-- The budgets of an account that a call with these labels counts against (a label of the call has
-- the budget's value), in budget order, each counting the period of its window at p_now
-- (meter_budget_period; the account's allowance month is [p_month_start, p_month_end)): a budget
-- still counting another period starts again (nothing used, nothing held, its cap available),
-- once, under its row's lock. Holds of the earlier period no longer count against it
-- (meter_settle_budgets). Found by label through the budgets' unique key: an account may have many.
CREATE OR REPLACE FUNCTION meter_current_budgets(
    p_account text, p_labels jsonb, p_month_start timestamptz, p_month_end timestamptz, p_now timestamptz
) RETURNS SETOF budgets LANGUAGE plpgsql AS $$
DECLARE
    v_budget budgets%ROWTYPE;
    v_period_start timestamptz;
BEGIN
    FOR v_budget IN
        SELECT g.* FROM jsonb_each_text(p_labels) AS l (key, value)
        JOIN budgets AS g ON g.account_id = p_account AND g.label_key = l.key AND g.label_value = l.value
        ORDER BY g.budget_id
    LOOP
        -- The account's month needs no call (most budgets, on every Reserve).
        v_period_start := CASE WHEN v_budget.budget_window = 'account_month' THEN p_month_start
            ELSE (meter_budget_period(v_budget.budget_window, v_budget.period_start, p_month_start, p_month_end,
                p_now)).period_start END;
        IF v_budget.period_start <> v_period_start THEN
            SELECT * INTO v_budget FROM budgets AS g
            WHERE g.account_id = p_account AND g.budget_id = v_budget.budget_id FOR UPDATE;
            v_period_start := (meter_budget_period(v_budget.budget_window, v_budget.period_start, p_month_start,
                p_month_end, p_now)).period_start;  -- again: another call may have moved it meanwhile
            IF v_budget.period_start <> v_period_start THEN
                PERFORM meter_lock_budget_rows(p_account, v_budget.budget_id);
                UPDATE budget_buckets AS b SET held = 0, used = 0, period_start = v_period_start
                WHERE b.account_id = p_account AND b.budget_id = v_budget.budget_id;
                PERFORM meter_spread_budget(p_account, v_budget.budget_id, v_budget.cap);
                UPDATE budgets AS g SET period_start = v_period_start, updated_at = now()
                WHERE g.account_id = p_account AND g.budget_id = v_budget.budget_id
                RETURNING * INTO v_budget;
            END IF;
        END IF;
        RETURN NEXT v_budget;
    END LOOP;
END;
$$;
