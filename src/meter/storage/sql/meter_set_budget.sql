-- SetBudget: a cap on what the calls of an account labelled p_key = p_value may use each period,
-- in charged tokens ('tokens') or provider cost ('cost_micros'). A new budget gets one row per
-- balance row of the account, its cap spread over them; a changed cap moves what is available by
-- the change (under every row's lock), so what is used and held this period still counts; a
-- budget still counting an earlier period starts again. Outcomes: 'created', 'changed',
-- 'unit_changed' (nothing changed: a budget counts in one unit), 'account_not_found'. Returns the
-- budget. The account counts its budgets (accounts.budget_count: Reserve looks for them only
-- when it has some).
CREATE OR REPLACE FUNCTION meter_set_budget(
    p_account text, p_key text, p_value text, p_unit text, p_cap bigint, OUT outcome text, OUT budget budgets
) LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_account accounts%ROWTYPE;
    v_total bigint;
BEGIN
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF NOT FOUND THEN
        outcome := 'account_not_found';
        RETURN;
    END IF;
    INSERT INTO budgets AS g (account_id, label_key, label_value, unit, cap, bucket_count, period_start, created_at,
        updated_at)
    VALUES (p_account, p_key, p_value, p_unit, p_cap, v_account.bucket_count, v_account.period_start, now(), now())
    ON CONFLICT (account_id, label_key, label_value) DO NOTHING
    RETURNING * INTO budget;
    IF FOUND THEN
        INSERT INTO budget_buckets (account_id, budget_id, bucket, unit, period_start, available, held, used)
        SELECT p_account, budget.budget_id, n, p_unit, v_account.period_start, 0, 0, 0
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
    v_total := meter_lock_budget_rows(p_account, budget.budget_id);
    IF budget.period_start <> v_account.period_start THEN
        UPDATE budget_buckets AS b SET held = 0, used = 0, period_start = v_account.period_start
        WHERE b.account_id = p_account AND b.budget_id = budget.budget_id;
        v_total := p_cap;
    ELSE
        v_total := v_total + (p_cap - budget.cap);  -- the change first: v_total + p_cap may pass 2^63 - 1
    END IF;
    PERFORM meter_spread_budget(p_account, budget.budget_id, v_total);
    UPDATE budgets AS g SET cap = p_cap, period_start = v_account.period_start, updated_at = now()
    WHERE g.account_id = p_account AND g.budget_id = budget.budget_id
    RETURNING * INTO budget;
    outcome := 'changed';
END;
$$;
