-- Take up to p_tokens from what the grant opened by p_request has available (its rows locked
-- with the account's, what is left spread again); nothing when there is no such grant. Returns the
-- grant's pool and what was taken. The caller writes the ledger.
CREATE OR REPLACE FUNCTION meter_take_from_grant(
    p_account text, p_request text, p_tokens bigint, OUT grant_pool text, OUT taken bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_available bigint;
BEGIN
    taken := 0;
    SELECT 'grant:' || g.grant_id INTO grant_pool FROM grants AS g
    WHERE g.account_id = p_account AND g.request_id = p_request;
    IF grant_pool IS NULL THEN
        RETURN;
    END IF;
    PERFORM meter_lock_buckets(p_account);
    SELECT coalesce(sum(b.available), 0)::bigint INTO v_available FROM buckets AS b
    WHERE b.account_id = p_account AND b.pool = grant_pool;
    taken := least(p_tokens, v_available);
    PERFORM meter_spread(p_account, grant_pool, v_available - taken);
END;
$$;
