-- RevokeGrant: what is left of a grant leaves the balance now (a 'revocation' entry; what was
-- spent stays spent, and what open holds took from it goes when they give it back), once.
-- Outcomes: 'revoked' (with the tokens that left), 'ended' (it had expired or been revoked
-- already: nothing changed), 'not_found'.
CREATE OR REPLACE FUNCTION meter_revoke_grant(
    p_account text, p_grant_id bigint, p_now timestamptz, p_caller text, OUT outcome text, OUT tokens bigint
) LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM 1 FROM accounts AS a WHERE a.account_id = p_account FOR UPDATE;
    PERFORM 1 FROM grants AS g WHERE g.account_id = p_account AND g.grant_id = p_grant_id;
    IF NOT FOUND THEN
        outcome := 'not_found';
        RETURN;
    END IF;
    tokens := meter_end_grant(p_account, p_grant_id, 'revoked', p_now, p_caller);
    outcome := CASE WHEN tokens IS NULL THEN 'ended' ELSE 'revoked' END;
    PERFORM meter_end_grants(p_account, p_now, p_caller);  -- the account's next grant expiry, again
END;
$$;
