-- Lock every bucket row of an account, in the one order all multi-row changes take them
-- (pool, bucket), which is what keeps them free of deadlocks. Installed by migration 0014.
CREATE OR REPLACE FUNCTION meter_lock_buckets(p_account text) RETURNS void LANGUAGE sql AS $$
    SELECT NULL FROM buckets AS b WHERE b.account_id = p_account ORDER BY b.pool, b.bucket FOR UPDATE
$$;
