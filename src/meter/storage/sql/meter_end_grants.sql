-- Expire an account's grants whose expiry has come by p_now (meter_end_grant, each once), and
-- note when its next grant expires (accounts.next_grant_expiry): run by the sweeper and by any call
-- that finds that moment passed, so that an expired grant leaves the balance once, whichever
-- comes first. Of several transactions finding it due, the one that locks the account row first
-- ends them; the others find nothing left to end. Returns how many grants it ended.
CREATE OR REPLACE FUNCTION meter_end_grants(p_account text, p_now timestamptz, p_caller text)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_grant_id bigint;
    v_ended integer := 0;
BEGIN
    PERFORM 1 FROM accounts AS a WHERE a.account_id = p_account FOR UPDATE;
    FOR v_grant_id IN
        SELECT g.grant_id FROM grants AS g
        WHERE g.account_id = p_account AND g.ended_at IS NULL AND g.expires_at <= p_now
        ORDER BY g.expires_at, g.grant_id
    LOOP
        PERFORM meter_end_grant(p_account, v_grant_id, 'expired', p_now, p_caller);
        v_ended := v_ended + 1;
    END LOOP;
    UPDATE accounts AS a SET next_grant_expiry = (
        SELECT min(g.expires_at) FROM grants AS g WHERE g.account_id = p_account AND g.ended_at IS NULL
    )
    WHERE a.account_id = p_account;
    RETURN v_ended;
END;
$$;
