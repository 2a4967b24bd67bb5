-- Open a grant of an account, with no tokens yet: its row (once by p_request: the grant that
-- request opened before is returned as it is, `opened` false) and its own balance rows (pool
-- 'grant:<id>', one per balance row of the account), which carry the order it is drawn in; the
-- account notes its next grant expiry. Its tokens come in as any credit does (meter_credit): the
-- caller credits them. The caller has locked the account row.
CREATE OR REPLACE FUNCTION meter_open_grant(
    p_account text, p_request text, p_source text, p_tokens bigint, p_priority integer,
    p_expires_at timestamptz, p_reason text, p_now timestamptz, p_caller text,
    OUT opened boolean, OUT granted grants
) LANGUAGE plpgsql AS $$
BEGIN
    SELECT * INTO granted FROM grants AS g WHERE g.account_id = p_account AND g.request_id = p_request;
    opened := NOT FOUND;
    IF NOT opened THEN
        RETURN;
    END IF;
    INSERT INTO grants AS g (account_id, request_id, source, tokens, priority, expires_at, reason, caller,
        created_at)
    VALUES (p_account, p_request, p_source, p_tokens, p_priority, p_expires_at, p_reason, p_caller, p_now)
    RETURNING * INTO granted;
    INSERT INTO buckets (account_id, pool, bucket, available, held, used, source, priority, expires_at, draw_seq)
    SELECT p_account, 'grant:' || granted.grant_id, n, 0, 0, 0, p_source, p_priority, p_expires_at, granted.grant_id
    FROM accounts AS a, generate_series(0, a.bucket_count - 1) AS n
    WHERE a.account_id = p_account;
    IF p_expires_at IS NOT NULL THEN
        UPDATE accounts AS a SET next_grant_expiry = least(a.next_grant_expiry, p_expires_at)
        WHERE a.account_id = p_account;
    END IF;
END;
$$;
