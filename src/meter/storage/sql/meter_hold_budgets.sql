-- Reserve's part of a call's budgets: each budget its labels count against (meter_current_budgets)
-- holds the call's worst case, p_tokens or p_cost micro-USD by its unit, on one row that has it
-- (trying rows from p_start on, skipping rows other calls hold locked), else, exactly, from all its
-- rows: locked in order, what they have between them evened out over them less the hold, which
-- goes on row p_start. Returns the parts (ids, rows, amounts, the periods they count: the hold's
-- budget columns; the account's allowance month is [p_month_start, p_month_end)), or, when
-- a budget has not got the worst case, that budget (refused_*: its label, unit and cap, what it has
-- left and what the call required) and no parts: what earlier budgets held is given back. A budget
-- with nothing left admits no call, not even one that costs nothing (a cap of 0 refuses every
-- call): a call needs room for its worst case and at least 1.
CREATE OR REPLACE FUNCTION meter_hold_budgets(
    p_account text, p_labels jsonb, p_month_start timestamptz, p_month_end timestamptz, p_now timestamptz,
    p_tokens bigint, p_cost bigint, p_start integer,
    OUT budget_ids bigint[], OUT budget_buckets smallint[], OUT budget_held bigint[],
    OUT budget_periods timestamptz[], OUT refused_key text,
    OUT refused_value text, OUT refused_unit text, OUT refused_cap bigint, OUT refused_remaining bigint,
    OUT refused_required bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_budget budgets%ROWTYPE;
    v_amount bigint;
    v_first smallint;
    v_bucket smallint;
    v_total bigint;
BEGIN
    FOR v_budget IN SELECT * FROM meter_current_budgets(p_account, p_labels, p_month_start, p_month_end, p_now) LOOP
        v_amount := CASE WHEN v_budget.unit = 'tokens' THEN p_tokens ELSE p_cost END;
        v_first := p_start % v_budget.bucket_count;
        WITH pick AS MATERIALIZED (
            SELECT b.bucket FROM budget_buckets AS b
            WHERE b.account_id = p_account AND b.budget_id = v_budget.budget_id AND b.available >= greatest(v_amount, 1)
            ORDER BY (b.bucket + v_budget.bucket_count - v_first) % v_budget.bucket_count
            LIMIT 1 FOR UPDATE SKIP LOCKED
        )
        UPDATE budget_buckets AS b SET available = b.available - v_amount, held = b.held + v_amount
        FROM pick WHERE b.account_id = p_account AND b.budget_id = v_budget.budget_id AND b.bucket = pick.bucket
        RETURNING b.bucket INTO v_bucket;
        IF v_bucket IS NULL THEN
            v_total := meter_lock_budget_rows(p_account, v_budget.budget_id);
            IF v_total < greatest(v_amount, 1) THEN
                PERFORM meter_settle_budgets(p_account, budget_periods, budget_ids, budget_buckets, budget_held,
                    true, 0, 0);
                refused_key := v_budget.label_key;
                refused_value := v_budget.label_value;
                refused_unit := v_budget.unit;
                refused_cap := v_budget.cap;
                refused_remaining := greatest(v_total, 0);
                refused_required := greatest(v_amount, 1);
                budget_ids := NULL;
                budget_buckets := NULL;
                budget_held := NULL;
                budget_periods := NULL;
                RETURN;
            END IF;
            PERFORM meter_spread_budget(p_account, v_budget.budget_id, v_total - v_amount);
            UPDATE budget_buckets AS b SET held = b.held + v_amount
            WHERE b.account_id = p_account AND b.budget_id = v_budget.budget_id AND b.bucket = v_first;
            v_bucket := v_first;
        END IF;
        budget_ids := array_append(budget_ids, v_budget.budget_id);
        budget_buckets := array_append(budget_buckets, v_bucket);
        budget_held := array_append(budget_held, v_amount);
        budget_periods := array_append(budget_periods, v_budget.period_start);
    END LOOP;
END;
$$;
