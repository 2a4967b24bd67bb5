-- SetBudget: a cap on what the calls of an account labelled p_key = p_value may use each period of
-- its window (p_window: the account's allowance month, a UTC day, week or calendar month;
-- meter_budget_period), in charged tokens ('tokens') or provider cost ('cost_micros'). A new
-- budget gets one row per balance row of the account, its cap spread over them; a changed cap
-- moves what is available by the change (under every row's lock), so what is used and held this
-- period still counts; a budget still counting an earlier period starts again. A budget keeps the
-- unit and window it was created with (p_window NULL: its own, the account's month for a new
-- one). Outcomes: 'created', 'changed', 'unit_changed' or 'window_changed' (nothing changed),
-- 'account_not_found'. Returns the budget. The account counts its budgets (accounts.budget_count:
-- Reserve looks for them only when it has some).
CREATE OR REPLACE FUNCTION meter_set_budget(
    p_account text, p_key text, p_value text, p_unit text, p_cap bigint, p_window text, p_now timestamptz,
    OUT outcome text, OUT budget budgets
) LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_account accounts%ROWTYPE;
    v_window text := coalesce(p_window, 'account_month');
    v_period_start timestamptz;
    v_total bigint;
BEGIN
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF NOT FOUND THEN
        outcome := 'account_not_found';
        RETURN;
    END IF;
    v_period_start := (meter_budget_period(v_window, NULL, v_account.period_start, v_account.period_end, p_now))
        .period_start;
    INSERT INTO budgets AS g (account_id, label_key, label_value, unit, cap, bucket_count, period_start,
        budget_window, created_at, updated_at)
    VALUES (p_account, p_key, p_value, p_unit, p_cap, v_account.bucket_count, v_period_start, v_window, p_now, p_now)
    ON CONFLICT (account_id, label_key, label_value) DO NOTHING
    RETURNING * INTO budget;
    IF FOUND THEN
        INSERT INTO budget_buckets (account_id, budget_id, bucket, unit, period_start, available, held, used)
        SELECT p_account, budget.budget_id, n, p_unit, v_period_start, 0, 0, 0
        FROM generate_series(0, v_account.bucket_count - 1) AS n;
        PERFORM meter_spread_budget(p_account, budget.budget_id, p_cap);
        UPDATE accounts AS a SET budget_count = a.budget_count + 1 WHERE a.account_id = p_account;
        outcome := 'created';
        RETURN;
    END IF;
    SELECT * INTO budget FROM budgets AS g
    WHERE g.account_id = p_account AND g.label_key = p_key AND g.label_value = p_value FOR UPDATE;
    IF budget.unit <> p_unit THEN
        outcome := 'unit_changed';
        RETURN;
    END IF;
    IF budget.budget_window <> coalesce(p_window, budget.budget_window) THEN
        outcome := 'window_changed';
        RETURN;
    END IF;
    v_period_start := (meter_budget_period(budget.budget_window, budget.period_start, v_account.period_start,
        v_account.period_end, p_now)).period_start;
    v_total := meter_lock_budget_rows(p_account, budget.budget_id);
    IF budget.period_start <> v_period_start THEN
        UPDATE budget_buckets AS b SET held = 0, used = 0, period_start = v_period_start
        WHERE b.account_id = p_account AND b.budget_id = budget.budget_id;
        v_total := p_cap;
    ELSE
        v_total := v_total + (p_cap - budget.cap);  -- the change first: v_total + p_cap may pass 2^63 - 1
    END IF;
    PERFORM meter_spread_budget(p_account, budget.budget_id, v_total);
    UPDATE budgets AS g SET cap = p_cap, period_start = v_period_start, updated_at = p_now
    WHERE g.account_id = p_account AND g.budget_id = budget.budget_id
    RETURNING * INTO budget;
    outcome := 'changed';
END;
$$;
