-- Begin the allowance month containing p_now on a locked account, and decide what it is granted:
-- a subscriber's month is granted the plan's allowance when it begins before paid_through (an
-- invoice paid for the billing period it begins in; else it waits for its invoice) or before
-- grace_until (a past-due subscription's grace, its plan's past_due_grace_days), an account
-- without a subscription's always. A cancelled subscription whose allowance lasts its paid months
-- (cancelled_allowance ends_with_period) keeps the cancelled plan's allowance until paid_through;
-- from the first month after it, the allowance it was given for later (allowance_after_paid) in
-- calendar months. The one home of that rule, for the hot path's roll-over and the service's
-- changes alike (meter_begin_period does the rest; p_expire_now: what is left ends now, even in
-- the same month). Returns the debt the grant paid.
CREATE OR REPLACE FUNCTION meter_begin_month(
    p_account text, p_now timestamptz, p_caller text, p_expire_now boolean DEFAULT false
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_account accounts%ROWTYPE;
    v_month record;
BEGIN
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF v_account.subscription_ref IS NULL AND v_account.paid_through <= p_now THEN
        UPDATE accounts AS a SET month_anchor = NULL, billing_period_start = NULL, billing_period_end = NULL,
            paid_through = NULL, monthly_allowance = coalesce(a.allowance_after_paid, a.monthly_allowance),
            allowance_after_paid = NULL
        WHERE a.account_id = p_account
        RETURNING * INTO v_account;
    END IF;
    v_month := meter_allowance_month(v_account.month_anchor, p_now);
    RETURN meter_begin_period(p_account, v_month.month_start, v_month.month_end,
        v_account.subscription_ref IS NULL OR v_month.month_start < v_account.paid_through
        OR v_month.month_start < v_account.grace_until, p_now, p_caller, p_expire_now);
END;
$$;
