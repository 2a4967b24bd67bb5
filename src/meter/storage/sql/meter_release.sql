-- Release: the call did not happen, its hold goes back (meter_settle with no charge). A hold
-- given back at expiry is recorded as released all the same, so that a Commit after it is
-- refused as after any Release; releasing twice changes nothing. Outcomes: 'released',
-- 'committed' (refused) and 'not_found', each with the balance; a Release that finds the
-- account's period ended moves it into its current one first (meter_roll_over). A hold charged its
-- worst case at expiry is given it all back (meter_correct_expired).
CREATE OR REPLACE FUNCTION meter_release(
    p_account text, p_hold uuid, p_clock_offset double precision, p_caller text
)
RETURNS TABLE (
    outcome text, balance meter_balance_row
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_hold holds%ROWTYPE;
    v_account accounts%ROWTYPE;
    v_settled record;
BEGIN
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF (v_hold.charged_at_expiry OR v_hold.status <> 'committed') AND (v_account.period_end <= v_now
        OR v_account.next_grant_expiry <= v_now) THEN
        v_account := meter_roll_over(p_account, v_now);
    END IF;
    IF v_hold.hold_id IS NULL THEN
        outcome := 'not_found';
    ELSIF v_hold.charged_at_expiry THEN
        outcome := 'released';  -- charged its worst case at expiry: the call used nothing
        v_settled := meter_correct_expired(v_hold, v_account, 'released', v_now, p_caller);
        v_account.debt := v_settled.debt;
    ELSIF v_hold.status = 'committed' THEN
        outcome := 'committed';
    ELSE
        outcome := 'released';
        IF v_hold.status = 'open' THEN
            v_settled := meter_settle(v_hold, v_account, 0, 'released', v_now, p_caller);
            v_account.debt := v_settled.debt;
        ELSIF v_hold.status = 'expired' THEN
            UPDATE holds AS h SET status = 'released', settled_at = v_now
            WHERE h.account_id = p_account AND h.hold_id = p_hold;
        END IF;
    END IF;
    SELECT b.* INTO balance FROM meter_balance(v_account) AS b;  -- no such account: its fields NULL
    RETURN NEXT;
END;
$$;
