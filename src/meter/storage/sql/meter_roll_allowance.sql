-- Roll p_tokens of the allowance an ended month left (its 'expiry' entry written) over into a
-- grant of its own (source 'rollover', credited by meter_credit_grant) that lives the plan's
-- rollover_days from p_start, the new month's: named after the month and the invoice that paid
-- for it ('rollover:<invoice>:<month>'), so that a refund or dispute of that invoice takes back
-- from it (meter_take_back). p_account is the account row as it was in the month that ended.
-- Returns the tokens rolled over.
CREATE OR REPLACE FUNCTION meter_roll_allowance(
    p_account accounts, p_tokens bigint, p_start timestamptz, p_now timestamptz, p_caller text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_month text := to_char(p_account.period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
    v_invoice text;
    v_open record;
BEGIN
    SELECT s.invoice_ref INTO v_invoice FROM subscription_payments AS s
    WHERE s.account_id = p_account.account_id AND NOT s.proration AND s.period_start <= p_account.period_start
        AND p_account.period_start < s.period_end
    ORDER BY s.period_start DESC LIMIT 1;
    v_open := meter_open_grant(p_account.account_id, 'rollover:' || coalesce(v_invoice, '') || ':' || v_month,
        'rollover', p_tokens, 0, p_start + make_interval(days => p_account.rollover_days),
        'rolled over from ' || v_month, p_now, p_caller);
    IF NOT v_open.opened THEN
        RETURN 0;  -- that month rolled over before (an account back in a month it left)
    END IF;
    PERFORM meter_credit_grant(p_account.account_id, v_open.granted, (v_open.granted).request_id, p_now, p_caller);
    RETURN p_tokens;
END;
$$;
