-- Lock every bucket row of an account, in the one order all multi-row changes take them (pool,
-- bucket), which is what keeps them free of deadlocks. PL/pgSQL, not SQL, so that its plan is kept:
-- a SQL function run by PERFORM is planned again at every call.
CREATE OR REPLACE FUNCTION meter_lock_buckets(p_account text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM FROM buckets AS b WHERE b.account_id = p_account ORDER BY b.pool, b.bucket FOR UPDATE;
END;
$$;
