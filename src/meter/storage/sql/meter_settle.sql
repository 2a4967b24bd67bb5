-- How a hold ends, exactly once: its status becomes p_status ('committed' with a charge and the
-- usage set on p_hold, 'released' or 'expired' with none). The charge comes from the hold,
-- allowance part first; what it does not cover comes from what the account has available,
-- allowance first, and what nothing pays for becomes debt (the shortfall, returned with the debt
-- after). What the hold does not use goes back to its rows, paying debt first; the allowance of a
-- hold taken in a period that has ended does not go back: it expires. A hold already given back at
-- expiry ('expired') is charged from what is available. The caller has locked the hold row and
-- read the account's (p_account); this locks the account row and then the bucket rows only when
-- they are needed, in that order; when it changed the debt, the debt's facts follow
-- (meter_debt_events). The call's budgets count it first (meter_settle_budgets: their rows come
-- before the account's in every transaction).
CREATE OR REPLACE FUNCTION meter_settle(
    p_hold holds, p_account accounts, p_charge bigint, p_status text, p_now timestamptz,
    p_caller text, OUT shortfall bigint, OUT debt bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_reservation text := meter_reservation_id(p_hold.account_id, p_hold.hold_id);  -- the ledger's ref
    v_parked boolean := p_hold.status = 'open';  -- its tokens still sit on its rows as held
    v_held_allowance bigint := CASE WHEN v_parked THEN p_hold.allowance_held ELSE 0 END;
    v_held_purchased bigint := CASE WHEN v_parked THEN p_hold.purchased_held ELSE 0 END;
    v_used_allowance bigint := least(p_charge, v_held_allowance);
    v_used_purchased bigint := least(p_charge - v_used_allowance, v_held_purchased);
    v_over bigint := p_charge - v_used_allowance - v_used_purchased;
    v_expired bigint := 0;
    v_back_allowance bigint := v_held_allowance - v_used_allowance;
    v_back_purchased bigint := v_held_purchased - v_used_purchased;
    v_from_allowance bigint := 0;
    v_from_purchased bigint := 0;
    v_account_locked boolean := false;
BEGIN
    shortfall := 0;
    debt := p_account.debt;
    IF p_hold.budget_ids IS NOT NULL THEN
        PERFORM meter_settle_budgets(p_hold.account_id, p_hold.budget_periods, p_hold.budget_ids, p_hold.budget_buckets,
            p_hold.budget_held, v_parked, p_charge, CASE WHEN p_status = 'committed' THEN p_hold.cost_micros ELSE 0 END);
    END IF;
    IF p_hold.period_start <> p_account.period_start THEN
        v_expired := v_back_allowance;  -- the period it was taken in has ended
        v_back_allowance := 0;
    END IF;
    IF v_over > 0 OR (debt > 0 AND v_back_allowance + v_back_purchased > 0) THEN
        PERFORM 1 FROM accounts AS a WHERE a.account_id = p_hold.account_id FOR UPDATE;  -- lock order
        v_account_locked := true;
    END IF;
    IF v_over > 0 THEN
        PERFORM meter_lock_buckets(p_hold.account_id);
        SELECT t.from_allowance, t.from_purchased, t.shortfall INTO v_from_allowance, v_from_purchased, shortfall
        FROM meter_take(p_hold.account_id, v_over) AS t;
        IF shortfall > 0 THEN
            UPDATE accounts AS a SET debt = a.debt + shortfall, updated_at = p_now
            WHERE a.account_id = p_hold.account_id
            RETURNING a.debt INTO debt;
        END IF;
    ELSIF debt > 0 THEN
        SELECT d.allowance_left, d.purchased_left, d.debt_left INTO v_back_allowance, v_back_purchased, debt
        FROM meter_pay_debt(p_hold.account_id, v_back_allowance, v_back_purchased, NULL, v_reservation, p_now,
            p_caller) AS d;
    END IF;
    INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, reservation_id)
    SELECT p_hold.account_id, p_now, p_caller, v.kind, v.pool, v.amount, v_reservation
    FROM (VALUES (1, 'usage', 'allowance', -(v_used_allowance + v_from_allowance)),
        (2, 'usage', 'purchased', -(v_used_purchased + v_from_purchased)),
        (3, 'usage', 'debt', -shortfall),
        (4, 'expiry', 'allowance', -v_expired)) AS v (n, kind, pool, amount)
    WHERE v.amount <> 0 ORDER BY v.n;
    UPDATE holds AS h SET status = p_status, settled_at = p_now, usage_input_tokens = p_hold.usage_input_tokens,
        usage_output_tokens = p_hold.usage_output_tokens, usage_cached_input_tokens = p_hold.usage_cached_input_tokens,
        usage_cache_write_tokens = p_hold.usage_cache_write_tokens,
        usage_reasoning_tokens = p_hold.usage_reasoning_tokens, charged_tokens = p_hold.charged_tokens,
        cost_micros = p_hold.cost_micros, unbilled_tokens = CASE WHEN p_status = 'committed' THEN shortfall END,
        late = p_hold.late
    WHERE h.account_id = p_hold.account_id AND h.hold_id = p_hold.hold_id;
    -- The hold's balance rows last, so that they stay locked for as short a time as possible: a
    -- Reserve of the account may be waiting for one.
    IF v_held_allowance > 0 OR v_over > 0 THEN
        UPDATE buckets AS b SET available = b.available + v_back_allowance, held = b.held - v_held_allowance,
            used = b.used + v_used_allowance + v_over,
            open_holds = b.open_holds - CASE WHEN v_held_allowance > 0 THEN 1 ELSE 0 END
        WHERE b.account_id = p_hold.account_id AND b.pool = 'allowance' AND b.bucket = p_hold.allowance_bucket;
    END IF;
    IF v_held_purchased > 0 THEN
        UPDATE buckets AS b SET available = b.available + v_back_purchased, held = b.held - v_held_purchased,
            used = b.used + v_used_purchased,
            open_holds = b.open_holds - CASE WHEN v_held_allowance > 0 THEN 0 ELSE 1 END
        WHERE b.account_id = p_hold.account_id AND b.pool = 'purchased' AND b.bucket = p_hold.purchased_bucket;
    END IF;
    IF v_account_locked THEN
        PERFORM meter_debt_events(p_hold.account_id, v_reservation, p_now);
    END IF;
END;
$$;
