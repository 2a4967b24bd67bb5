-- End a grant of an account, once: what is left of it leaves the balance (an 'expiry' entry when
-- it expired, a 'revocation' when revoked; what was spent stays spent), its rows take nothing
-- more, and what open holds took from it goes too when they give it back (meter_settle: their
-- rows' expires_at is the grant's end). grant.expired or grant.revoked tells it. p_how: 'expired'
-- or 'revoked'. Returns the tokens that left, NULL when the grant had ended already (or is not
-- the account's). The caller has locked the account row.
CREATE OR REPLACE FUNCTION meter_end_grant(
    p_account text, p_grant_id bigint, p_how text, p_now timestamptz, p_caller text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_grant grants%ROWTYPE;
    v_pool text := 'grant:' || p_grant_id;
    v_left bigint;
BEGIN
    SELECT * INTO v_grant FROM grants AS g
    WHERE g.account_id = p_account AND g.grant_id = p_grant_id AND g.ended_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM meter_lock_buckets(p_account);
    SELECT coalesce(sum(b.available), 0)::bigint INTO v_left FROM buckets AS b
    WHERE b.account_id = p_account AND b.pool = v_pool;
    UPDATE buckets AS b SET available = 0, expires_at = least(b.expires_at, p_now)
    WHERE b.account_id = p_account AND b.pool = v_pool;
    IF v_left > 0 THEN
        INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, ref)
        VALUES (p_account, p_now, p_caller, CASE WHEN p_how = 'revoked' THEN 'revocation' ELSE 'expiry' END, v_pool,
            -v_left, v_grant.request_id);
    END IF;
    UPDATE grants AS g SET ended_at = p_now, ended_how = p_how, ended_tokens = v_left
    WHERE g.account_id = p_account AND g.grant_id = p_grant_id;
    PERFORM meter_emit(p_account, 'grant.' || p_how, jsonb_build_object('grant_id', p_grant_id,
        'source', v_grant.source, 'tokens', v_left, 'granted', v_grant.tokens), p_now);
    RETURN v_left;
END;
$$;
