-- Whether what a hold gives back to its part p_part expires instead: the part drew on the
-- allowance of a period that has ended (the account is in another), or on a grant whose rows
-- take nothing more by p_now (it expired, or was revoked: meter_end_grant). The purchased pool
-- never ends.
CREATE OR REPLACE FUNCTION meter_part_ended(p_hold holds, p_account accounts, p_part integer, p_now timestamptz)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_ends timestamptz;
BEGIN
    IF p_hold.part_pools[p_part] = 'allowance' THEN
        RETURN p_hold.period_start <> p_account.period_start;
    ELSIF p_hold.part_pools[p_part] = 'purchased' THEN
        RETURN false;
    END IF;
    SELECT b.expires_at INTO v_ends FROM buckets AS b
    WHERE b.account_id = p_hold.account_id AND b.pool = p_hold.part_pools[p_part] AND b.bucket = p_hold.part_bucket;
    RETURN coalesce(v_ends <= p_now, false);
END;
$$;
