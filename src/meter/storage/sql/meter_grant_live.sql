-- Whether a grant still takes tokens at p_now: not ended (expired or revoked: meter_end_grant) and
-- not past its expiry (the sweeper or the next call ends it). What is given back to a grant that
-- is not live would have expired by now: it stays out.
CREATE OR REPLACE FUNCTION meter_grant_live(p_grant grants, p_now timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p_grant.ended_at IS NULL AND (p_grant.expires_at IS NULL OR p_grant.expires_at > p_now)
$$;
