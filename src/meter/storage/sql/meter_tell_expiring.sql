-- Tell the accounts whose tokens will expire within p_notice of p_now with tokens left: a
-- balance.expiring event (the tokens, when, the source, and a grant's id), once per allowance month
-- and once per grant, at most p_limit accounts and p_limit grants a call, each under its row's lock
-- (one skipped while another transaction holds it is told by a later sweep). What ends with nothing
-- left is marked told too, so that it is not read again. Returns how many were told.
CREATE OR REPLACE FUNCTION meter_tell_expiring(p_now timestamptz, p_notice interval, p_limit integer)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_account accounts%ROWTYPE;
    v_grant grants%ROWTYPE;
    v_left bigint;
    v_told integer := 0;
BEGIN
    FOR v_account IN
        SELECT * FROM accounts AS a
        WHERE a.period_end > p_now AND a.period_end <= p_now + p_notice
            AND a.expiring_told_period_start IS DISTINCT FROM a.period_start
        ORDER BY a.period_end
        LIMIT p_limit
        FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        SELECT coalesce(sum(b.available), 0)::bigint INTO v_left FROM buckets AS b
        WHERE b.account_id = v_account.account_id AND b.pool = 'allowance';
        UPDATE accounts AS a SET expiring_told_period_start = v_account.period_start
        WHERE a.account_id = v_account.account_id;
        IF v_left > 0 THEN
            PERFORM meter_emit(v_account.account_id, 'balance.expiring', jsonb_build_object('tokens', v_left,
                'expires_at', to_char(v_account.period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                'source', 'allowance'), p_now);
            v_told := v_told + 1;
        END IF;
    END LOOP;
    FOR v_grant IN
        SELECT * FROM grants AS g
        WHERE g.ended_at IS NULL AND NOT g.expiring_told AND g.expires_at > p_now
            AND g.expires_at <= p_now + p_notice
        ORDER BY g.expires_at
        LIMIT p_limit
        FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        SELECT coalesce(sum(b.available), 0)::bigint INTO v_left FROM buckets AS b
        WHERE b.account_id = v_grant.account_id AND b.pool = 'grant:' || v_grant.grant_id;
        UPDATE grants AS g SET expiring_told = true
        WHERE g.account_id = v_grant.account_id AND g.grant_id = v_grant.grant_id;
        IF v_left > 0 THEN
            PERFORM meter_emit(v_grant.account_id, 'balance.expiring', jsonb_build_object('tokens', v_left,
                'expires_at', to_char(v_grant.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                'source', v_grant.source, 'grant_id', v_grant.grant_id), p_now);
            v_told := v_told + 1;
        END IF;
    END LOOP;
    RETURN v_told;
END;
$$;
