-- Begin the allowance month [p_start, p_end) of a locked account: the allowance left from the
-- month before expires (an 'expiry' entry and allowance.expired), up to the plan's rollover cap of
-- it rolling over into a grant of its own instead (meter_roll_allowance), and the subscription
-- payments that paid for that month add it to what their months left unused (a later refund takes
-- that back from nothing: it expired); every row's count of tokens used starts again; and with
-- p_grant the plan's monthly allowance is granted (a 'subscription_grant' entry that pays debt
-- first, and allowance.granted), less what a refund or dispute took back from the months of the
-- payment that pays for this one before they began (withheld_tokens: from its last months first,
-- each at most its per-month share, as if the paid year were shorter; the month remembers its part
-- in allowance_withheld, for an upgrade within it). The account row names the new month and its
-- allowance before the grant, so that the grant's events carry them. Allowance held by open holds
-- stays held: it expires when they settle (meter_settle). A month is granted once: one whose grant
-- the ledger has already (an account back in a month it left) is not granted again. Beginning the
-- month the account is in again (an invoice paying for it late, another plan in it) expires and
-- resets nothing, unless p_expire_now (what is left of the allowance ends now: a cancellation's,
-- ref 'expired_now:<month>'). Returns the debt the grant paid.
CREATE OR REPLACE FUNCTION meter_begin_period(
    p_account text, p_start timestamptz, p_end timestamptz, p_grant boolean, p_now timestamptz, p_caller text,
    p_expire_now boolean DEFAULT false
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_before accounts%ROWTYPE;
    v_account accounts%ROWTYPE;
    v_same boolean;
    v_unused bigint := 0;
    v_grant bigint := 0;
    v_withheld bigint := 0;
    v_payment subscription_payments%ROWTYPE;
    v_paid bigint := 0;
    v_month text := to_char(p_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN date_trunc('second', p_start) = p_start THEN '' ELSE to_char(p_start AT TIME ZONE 'UTC', '.US') END
        || '+00:00';  -- as Python's isoformat() writes it
    v_ref text := 'period:' || v_month;
    v_rolled bigint := 0;
BEGIN
    SELECT * INTO v_before FROM accounts AS a WHERE a.account_id = p_account;
    v_same := v_before.period_start = p_start AND v_before.period_end = p_end;
    PERFORM meter_lock_buckets(p_account);
    IF NOT v_same OR p_expire_now THEN
        SELECT coalesce(sum(b.available), 0)::bigint INTO v_unused FROM buckets AS b
        WHERE b.account_id = p_account AND b.pool = 'allowance';
        IF v_unused > 0 THEN
            INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, ref)
            VALUES (p_account, p_now, p_caller, 'expiry', 'allowance', -v_unused,
                CASE WHEN v_same THEN 'expired_now:' || v_month ELSE v_ref END);
        END IF;
        PERFORM meter_spread(p_account, 'allowance', 0);
    END IF;
    IF NOT v_same AND v_before.period_start < p_start AND v_unused > 0 AND v_before.rollover_cap IS NOT NULL THEN
        v_rolled := meter_roll_allowance(v_before, least(v_unused, v_before.rollover_cap), p_start, p_now, p_caller);
    END IF;
    IF NOT v_same THEN
        IF v_before.period_start < p_start THEN
            UPDATE subscription_payments AS s SET unused_at_end = coalesce(s.unused_at_end, 0) + v_unused - v_rolled
            WHERE s.account_id = p_account AND s.period_start <= v_before.period_start
                AND v_before.period_start < s.period_end;
        END IF;
        UPDATE buckets AS b SET used = 0, expires_at = CASE WHEN b.pool = 'allowance' THEN p_end ELSE b.expires_at END
        WHERE b.account_id = p_account;
    END IF;
    IF p_grant AND NOT EXISTS (
        SELECT FROM ledger_entries AS l
        WHERE l.account_id = p_account AND l.kind = 'subscription_grant' AND l.ref = v_ref
    ) THEN
        IF p_start < v_before.paid_through THEN  -- a month an invoice paid for
            SELECT * INTO v_payment FROM subscription_payments AS s
            WHERE s.account_id = p_account AND NOT s.proration AND s.months > 0 AND s.period_start <= p_start
                AND p_start < s.period_end
            ORDER BY s.period_start DESC
            LIMIT 1;
            IF FOUND AND v_payment.withheld_tokens > 0 THEN
                -- The withheld tokens are the payment's last months', each at most its per-month
                -- share: this one's part is what the months after it do not cover.
                v_withheld := meter_month_withheld(v_payment, p_end, v_payment.withheld_tokens);
            END IF;
        END IF;
        v_grant := greatest(0, v_before.monthly_allowance - v_withheld);
    END IF;
    UPDATE accounts AS a SET period_start = p_start, period_end = p_end,
        allowance_total = CASE WHEN v_same THEN a.allowance_total + v_grant ELSE v_grant END,
        allowance_withheld = CASE WHEN v_grant > 0 OR v_withheld > 0 THEN v_withheld
            WHEN v_same THEN a.allowance_withheld ELSE 0 END,
        granted_period_start = CASE WHEN p_grant THEN p_start ELSE a.granted_period_start END, updated_at = p_now
    WHERE a.account_id = p_account
    RETURNING * INTO v_account;
    IF v_unused > 0 THEN
        PERFORM meter_emit(p_account, 'allowance.expired', jsonb_build_object('tokens', v_unused, 'rolled_over',
            v_rolled), p_now);
    END IF;
    IF v_grant > 0 THEN
        v_paid := meter_credit(p_account, 'subscription_grant', 'allowance', v_grant, v_ref, v_account.plan_id,
            p_now, p_caller);
        PERFORM meter_emit(p_account, 'allowance.granted', jsonb_build_object('tokens', v_grant,
            'debt_paid', v_paid, 'reason', 'period'), p_now);
    END IF;
    RETURN v_paid;
END;
$$;
