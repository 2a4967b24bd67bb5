-- The common Commit in one statement: usage within the hold, in its period, charged to the
-- hold's rows and added to the day's totals; 'slow' (changing nothing) when the general path
-- must decide. Installed by migration 0008.
CREATE OR REPLACE FUNCTION meter_commit_fast(
    p_account text, p_hold uuid, p_input bigint, p_output bigint, p_clock_offset double precision, p_caller text
)
RETURNS TABLE (
    outcome text, charged bigint, cost bigint, late boolean, period_start timestamptz,
    period_end timestamptz, plan_id text, allowance_total bigint, debt bigint, allowance_remaining bigint,
    purchased_remaining bigint, allowance_held bigint, purchased_held bigint, used bigint, warned smallint
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_hold holds%ROWTYPE;
    v_account accounts%ROWTYPE;
    v_charge bigint;
    v_used_allowance bigint;
    v_used_purchased bigint;
    v_cost bigint;
    v_late boolean;
    v_reservation text := p_account || '/' || replace(p_hold::text, '-', '');
BEGIN
    outcome := 'slow';
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    IF NOT FOUND OR v_hold.status <> 'open' THEN
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF v_account.period_end <= v_now OR v_account.period_start <> v_hold.period_start OR v_account.debt > 0 THEN
        RETURN NEXT;
        RETURN;
    END IF;
    v_charge := (p_input * v_hold.input_weight + p_output * v_hold.output_weight + 999999) / 1000000;
    IF v_charge > v_hold.allowance_held + v_hold.purchased_held THEN
        RETURN NEXT;
        RETURN;
    END IF;
    v_used_allowance := least(v_charge, v_hold.allowance_held);
    v_used_purchased := least(v_charge - v_used_allowance, v_hold.purchased_held);
    -- What locks nothing another call waits on comes first; the balance row (which Reserves of
    -- the account look for) is locked last, so it stays locked for as short a time as possible.
    INSERT INTO ledger_entries (account_id, created_at, kind, pool, amount, reservation_id, caller)
    SELECT p_account, v_now, 'usage', v.pool, v.amount, v_reservation, p_caller
    FROM (VALUES (1, 'allowance', -v_used_allowance), (2, 'purchased', -v_used_purchased)) AS v(n, pool, amount)
    WHERE v.amount <> 0 ORDER BY v.n;
    v_cost := (p_input * v_hold.input_price + p_output * v_hold.output_price + 999999) / 1000000;
    v_late := v_now >= v_hold.expires_at;
    UPDATE holds AS h SET status = 'committed', settled_at = v_now, usage_input_tokens = p_input,
        usage_output_tokens = p_output, charged_tokens = v_charge, cost_micros = v_cost, unbilled_tokens = 0,
        late = v_late
    WHERE h.account_id = p_account AND h.hold_id = p_hold;
    IF v_hold.allowance_held > 0 THEN
        UPDATE buckets AS b SET available = b.available + v_hold.allowance_held - v_used_allowance,
            held = b.held - v_hold.allowance_held, used = b.used + v_used_allowance,
            open_holds = b.open_holds - 1
        WHERE b.account_id = p_account AND b.pool = 'allowance' AND b.bucket = v_hold.allowance_bucket;
    END IF;
    IF v_hold.purchased_held > 0 THEN
        UPDATE buckets AS b SET available = b.available + v_hold.purchased_held - v_used_purchased,
            held = b.held - v_hold.purchased_held, used = b.used + v_used_purchased,
            open_holds = b.open_holds - CASE WHEN v_hold.allowance_held > 0 THEN 0 ELSE 1 END
        WHERE b.account_id = p_account AND b.pool = 'purchased' AND b.bucket = v_hold.purchased_bucket;
    END IF;
    -- On the totals row of the balance row updated above (still locked): no new lock to wait on.
    INSERT INTO usage_daily AS u (account_id, day, model, pool, bucket, requests, input_tokens, output_tokens,
        charged_tokens, cost_micros, unbilled_tokens)
    VALUES (p_account, (v_now AT TIME ZONE 'UTC')::date, v_hold.model,
        CASE WHEN v_hold.allowance_held > 0 THEN 'allowance' ELSE 'purchased' END,
        CASE WHEN v_hold.allowance_held > 0 THEN v_hold.allowance_bucket ELSE v_hold.purchased_bucket END,
        1, p_input, p_output, v_charge, v_cost, 0)
    ON CONFLICT (account_id, day, model, pool, bucket) DO UPDATE SET requests = u.requests + 1,
        input_tokens = u.input_tokens + excluded.input_tokens,
        output_tokens = u.output_tokens + excluded.output_tokens,
        charged_tokens = u.charged_tokens + excluded.charged_tokens,
        cost_micros = u.cost_micros + excluded.cost_micros;
    outcome := 'ok';
    charged := v_charge;
    cost := v_cost;
    late := v_late;
    period_start := v_account.period_start;
    period_end := v_account.period_end;
    plan_id := v_account.plan_id;
    allowance_total := v_account.allowance_total;
    debt := v_account.debt;
    warned := CASE WHEN v_account.warned_period_start = v_account.period_start
        THEN v_account.warned_levels ELSE 0 END;
    SELECT coalesce(sum(b.available) FILTER (WHERE b.pool = 'allowance'), 0),
           coalesce(sum(b.available) FILTER (WHERE b.pool = 'purchased'), 0),
           coalesce(sum(b.held) FILTER (WHERE b.pool = 'allowance'), 0),
           coalesce(sum(b.held) FILTER (WHERE b.pool = 'purchased'), 0),
           coalesce(sum(b.used), 0)
    INTO allowance_remaining, purchased_remaining, allowance_held, purchased_held, used
    FROM buckets AS b WHERE b.account_id = p_account;
    RETURN NEXT;
END;
$$;
