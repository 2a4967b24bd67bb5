-- A hold charged its worst case at expiry (the account's expired holds are charged), then
-- committed late (p_hold carries the call's usage, charge and cost) or released (p_status
-- 'released': nothing was used): the difference is settled, once. More than the worst case is
-- taken from what is available, allowance first (debt where nothing is); less goes back to the
-- pools it came from, purchased first, paying debt first; allowance of a period that has ended
-- does not come back (it expires). The expiry's line of the day's usage totals becomes the call's;
-- the period's usage counter follows while the hold's period is the account's. The hold keeps its
-- settled_at (the day its usage is counted on). The caller has locked the hold row; this locks
-- the budgets' rows (the difference counted against them), then the account row, then its bucket
-- rows, then the totals row.
CREATE OR REPLACE FUNCTION meter_correct_expired(
    p_hold holds, p_account accounts, p_status text, p_now timestamptz, p_caller text,
    OUT shortfall bigint, OUT debt bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_reservation text := meter_reservation_id(p_hold.account_id, p_hold.hold_id);  -- the ledger's ref
    v_old holds%ROWTYPE;
    v_released boolean := p_status = 'released';
    v_charge bigint := CASE WHEN p_status = 'released' THEN 0 ELSE p_hold.charged_tokens END;
    v_delta bigint;
    v_same_period boolean := p_hold.period_start = p_account.period_start;
    v_from_allowance bigint := 0;
    v_from_purchased bigint := 0;
    v_back_purchased bigint := 0;
    v_back_allowance bigint := 0;
    v_expired bigint := 0;
    v_left_allowance bigint := 0;
    v_left_purchased bigint := 0;
    v_pool text;  -- the totals row of the expiry's count
    v_bucket smallint;
BEGIN
    SELECT * INTO v_old FROM holds AS h WHERE h.account_id = p_hold.account_id AND h.hold_id = p_hold.hold_id;
    v_delta := v_charge - v_old.charged_tokens;
    shortfall := 0;
    IF p_hold.budget_ids IS NOT NULL THEN
        PERFORM meter_settle_budgets(p_hold.account_id, p_hold.budget_periods, p_hold.budget_ids, p_hold.budget_buckets,
            p_hold.budget_held, false, v_delta,
            CASE WHEN v_released THEN 0 ELSE p_hold.cost_micros END - v_old.cost_micros);
    END IF;
    SELECT a.debt INTO debt FROM accounts AS a WHERE a.account_id = p_hold.account_id FOR UPDATE;
    PERFORM meter_lock_buckets(p_hold.account_id);
    IF v_delta > 0 THEN
        SELECT t.from_allowance, t.from_purchased, t.shortfall INTO v_from_allowance, v_from_purchased, shortfall
        FROM meter_take(p_hold.account_id, v_delta) AS t;
        IF shortfall > 0 THEN
            UPDATE accounts AS a SET debt = a.debt + shortfall, updated_at = p_now
            WHERE a.account_id = p_hold.account_id
            RETURNING a.debt INTO debt;
        END IF;
    ELSIF v_delta < 0 THEN
        v_back_purchased := least(-v_delta, p_hold.purchased_held);
        v_back_allowance := -v_delta - v_back_purchased;
        IF NOT v_same_period THEN
            v_expired := v_back_allowance;  -- the period it was charged in has ended
            v_back_allowance := 0;
        END IF;
    END IF;
    INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, reservation_id)
    SELECT p_hold.account_id, p_now, p_caller, v.kind, v.pool, v.amount, v_reservation
    FROM (VALUES (1, 'usage', 'allowance', v_back_allowance + v_expired - v_from_allowance),
        (2, 'usage', 'purchased', v_back_purchased - v_from_purchased),
        (3, 'usage', 'debt', -shortfall),
        (4, 'expiry', 'allowance', -v_expired)) AS v (n, kind, pool, amount)
    WHERE v.amount <> 0 ORDER BY v.n;
    v_left_allowance := v_back_allowance;
    v_left_purchased := v_back_purchased;
    IF debt > 0 AND v_back_allowance + v_back_purchased > 0 THEN
        SELECT d.allowance_left, d.purchased_left, d.debt_left INTO v_left_allowance, v_left_purchased, debt
        FROM meter_pay_debt(p_hold.account_id, v_back_allowance, v_back_purchased, NULL, v_reservation, p_now,
            p_caller) AS d;
    END IF;
    IF NOT v_same_period AND v_delta < 0 THEN
        v_back_allowance := 0;  -- the usage it gives back was counted in a period that has ended
        v_back_purchased := 0;
    END IF;
    UPDATE buckets AS b SET available = b.available + v_left_allowance,
        used = b.used + v_from_allowance + shortfall - v_back_allowance
    WHERE b.account_id = p_hold.account_id AND b.pool = 'allowance' AND b.bucket = p_hold.allowance_bucket;
    UPDATE buckets AS b SET available = b.available + v_left_purchased,
        used = b.used + v_from_purchased - v_back_purchased
    WHERE b.account_id = p_hold.account_id AND b.pool = 'purchased' AND b.bucket = p_hold.purchased_bucket;
    -- The expiry's line of the day's usage totals becomes the call's (or goes, for a Release): on the
    -- row of its balance row, or the one its day was folded into (meter_fold_usage).
    SELECT u.pool, u.bucket INTO v_pool, v_bucket FROM usage_daily AS u
    WHERE u.account_id = p_hold.account_id AND u.day = (v_old.settled_at AT TIME ZONE 'UTC')::date
      AND u.model = p_hold.model AND u.labels = p_hold.usage_labels
    ORDER BY u.pool = CASE WHEN p_hold.allowance_held > 0 THEN 'allowance' ELSE 'purchased' END
        AND u.bucket = CASE WHEN p_hold.allowance_held > 0 THEN p_hold.allowance_bucket ELSE p_hold.purchased_bucket END
        DESC
    LIMIT 1 FOR UPDATE;
    IF NOT FOUND THEN  -- folded while this waited for its row: retried as a whole by the service
        RAISE EXCEPTION 'the usage totals of % were being folded', p_hold.account_id USING ERRCODE = '40001';
    END IF;
    DELETE FROM usage_daily AS u
    WHERE v_released AND u.requests = 1 AND u.account_id = p_hold.account_id
      AND u.day = (v_old.settled_at AT TIME ZONE 'UTC')::date AND u.model = p_hold.model
      AND u.labels = p_hold.usage_labels AND u.pool = v_pool AND u.bucket = v_bucket;
    UPDATE usage_daily AS u SET requests = u.requests - CASE WHEN v_released THEN 1 ELSE 0 END,
        input_tokens = u.input_tokens + CASE WHEN v_released THEN 0 ELSE p_hold.usage_input_tokens END
            - v_old.usage_input_tokens,
        output_tokens = u.output_tokens + CASE WHEN v_released THEN 0 ELSE p_hold.usage_output_tokens END
            - v_old.usage_output_tokens,
        cached_input_tokens = u.cached_input_tokens
            + CASE WHEN v_released THEN 0 ELSE p_hold.usage_cached_input_tokens END - v_old.usage_cached_input_tokens,
        cache_write_tokens = u.cache_write_tokens
            + CASE WHEN v_released THEN 0 ELSE p_hold.usage_cache_write_tokens END - v_old.usage_cache_write_tokens,
        reasoning_tokens = u.reasoning_tokens
            + CASE WHEN v_released THEN 0 ELSE p_hold.usage_reasoning_tokens END - v_old.usage_reasoning_tokens,
        charged_tokens = u.charged_tokens + v_delta,
        cost_micros = u.cost_micros + CASE WHEN v_released THEN 0 ELSE p_hold.cost_micros END - v_old.cost_micros,
        unbilled_tokens = u.unbilled_tokens + shortfall - v_old.unbilled_tokens
    WHERE u.account_id = p_hold.account_id AND u.day = (v_old.settled_at AT TIME ZONE 'UTC')::date
      AND u.model = p_hold.model AND u.labels = p_hold.usage_labels AND u.pool = v_pool AND u.bucket = v_bucket;
    UPDATE holds AS h SET status = p_status, charged_at_expiry = false, late = NOT v_released,
        usage_input_tokens = CASE WHEN v_released THEN NULL ELSE p_hold.usage_input_tokens END,
        usage_output_tokens = CASE WHEN v_released THEN NULL ELSE p_hold.usage_output_tokens END,
        usage_cached_input_tokens = CASE WHEN v_released THEN 0 ELSE p_hold.usage_cached_input_tokens END,
        usage_cache_write_tokens = CASE WHEN v_released THEN 0 ELSE p_hold.usage_cache_write_tokens END,
        usage_reasoning_tokens = CASE WHEN v_released THEN 0 ELSE p_hold.usage_reasoning_tokens END,
        charged_tokens = CASE WHEN v_released THEN NULL ELSE v_charge END,
        cost_micros = CASE WHEN v_released THEN NULL ELSE p_hold.cost_micros END,
        unbilled_tokens = CASE WHEN v_released THEN NULL ELSE v_old.unbilled_tokens + shortfall END
    WHERE h.account_id = p_hold.account_id AND h.hold_id = p_hold.hold_id;
    PERFORM meter_debt_events(p_hold.account_id, v_reservation, p_now);
END;
$$;
