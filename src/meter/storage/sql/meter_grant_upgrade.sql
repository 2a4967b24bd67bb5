-- An upgrade within the month, the account row locked: the month's allowance grows by p_tokens
-- at once (the difference between the new plan's allowance and what the month was granted, which
-- the service decides), a 'subscription_grant' credit that pays the debt first, and
-- allowance.granted (reason 'upgrade', with the debt it paid). The month counts as granted.
CREATE OR REPLACE FUNCTION meter_grant_upgrade(
    p_account text, p_tokens bigint, p_ref text, p_note text, p_now timestamptz, p_caller text
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_paid bigint;
BEGIN
    UPDATE accounts AS a SET allowance_total = a.allowance_total + p_tokens, granted_period_start = a.period_start,
        updated_at = p_now
    WHERE a.account_id = p_account;
    v_paid := meter_credit(p_account, 'subscription_grant', 'allowance', p_tokens, p_ref, p_note, p_now, p_caller);
    PERFORM meter_emit(p_account, 'allowance.granted', jsonb_build_object('tokens', p_tokens, 'debt_paid', v_paid,
        'reason', 'upgrade'), p_now);
    RETURN v_paid;
END;
$$;
