-- Bring an account to p_now: one whose allowance month has ended moves into the month containing
-- p_now, which begins (meter_begin_month decides what it is granted), and one whose next grant
-- expiry has come has its expired grants ended (meter_end_grants). Called by the hot-path
-- functions when the account they read is due (period_end or next_grant_expiry passed), by the
-- sweeper, and before any other change to an account. Of several transactions crossing the same
-- boundary exactly one moves the account (the UPDATE that finds the old period_end); the others
-- wait for its row lock and read what it left. Returns the account's row as it is now. These are
-- meter's own doing: the ledger names 'meter'.
CREATE OR REPLACE FUNCTION meter_roll_over(p_account text, p_now timestamptz)
RETURNS accounts LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_account accounts%ROWTYPE;
BEGIN
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF NOT FOUND OR (v_account.period_end > p_now AND NOT coalesce(v_account.next_grant_expiry <= p_now, false)) THEN
        RETURN v_account;
    END IF;
    IF v_account.period_end <= p_now THEN
        UPDATE accounts AS a SET updated_at = p_now
        WHERE a.account_id = p_account AND a.period_end = v_account.period_end;
        IF FOUND THEN
            PERFORM meter_begin_month(p_account, p_now, 'meter');
        END IF;
    END IF;
    IF v_account.next_grant_expiry <= p_now THEN
        PERFORM meter_end_grants(p_account, p_now, 'meter');
    END IF;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    RETURN v_account;
END;
$$;
