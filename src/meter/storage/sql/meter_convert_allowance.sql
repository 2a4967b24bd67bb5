-- A cancelled subscription whose plan converts its allowance (cancelled_allowance "converts"):
-- what is left of the month's allowance becomes a grant of its own (source 'rollover'), expiring
-- at p_expires_at, drawn with the account's other pools in the one order. The allowance's part is
-- an 'expiry' entry (ref 'converted:<month>'), the grant's a 'grant' entry of as many tokens. The
-- grant is named after the invoice that paid for the month ('converted:<invoice>'), so that a
-- refund or dispute of that invoice takes back from it (meter_take_back); after a month no invoice
-- paid for, after the month. grant.created tells it. The caller has locked the account row.
-- Returns the tokens converted.
CREATE OR REPLACE FUNCTION meter_convert_allowance(
    p_account text, p_expires_at timestamptz, p_now timestamptz, p_caller text
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_account accounts%ROWTYPE;
    v_left bigint;
    v_month text;
    v_invoice text;
    v_open record;
BEGIN
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    PERFORM meter_lock_buckets(p_account);
    SELECT coalesce(sum(b.available), 0)::bigint INTO v_left FROM buckets AS b
    WHERE b.account_id = p_account AND b.pool = 'allowance';
    IF v_left = 0 THEN
        RETURN 0;
    END IF;
    v_month := to_char(v_account.period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
    SELECT s.invoice_ref INTO v_invoice FROM subscription_payments AS s
    WHERE s.account_id = p_account AND NOT s.proration AND s.period_start <= v_account.period_start
        AND v_account.period_start < s.period_end
    ORDER BY s.period_start DESC LIMIT 1;
    v_open := meter_open_grant(p_account, 'converted:' || coalesce(v_invoice, '') || ':' || v_month, 'rollover',
        v_left, 0, p_expires_at, 'cancelled plan ' || v_account.plan_id, p_now, p_caller);
    IF NOT v_open.opened THEN
        RETURN 0;  -- converted before
    END IF;
    PERFORM meter_spread(p_account, 'allowance', 0);
    INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, ref)
    VALUES (p_account, p_now, p_caller, 'expiry', 'allowance', -v_left, 'converted:' || v_month);
    PERFORM meter_credit_grant(p_account, v_open.granted, 'converted:' || v_month, p_now, p_caller);
    RETURN v_left;
END;
$$;
