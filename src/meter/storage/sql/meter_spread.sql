-- Set a pool's available tokens to p_available, spread over its rows as evenly as whole tokens
-- allow (the lowest buckets get the remainder), so that each row can serve a hold alone for as long
-- as possible. Held and used tokens stay where they are. The caller has locked the rows
-- (meter_lock_buckets). PL/pgSQL, not SQL, so that its plan is kept: a SQL function run by PERFORM
-- is planned again at every call.
CREATE OR REPLACE FUNCTION meter_spread(p_account text, p_pool text, p_available bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WITH n AS (
        SELECT count(*) AS rows FROM buckets AS b WHERE b.account_id = p_account AND b.pool = p_pool
    )
    UPDATE buckets AS b SET available = p_available / n.rows
        + CASE WHEN b.bucket < p_available % n.rows THEN 1 ELSE 0 END
    FROM n WHERE b.account_id = p_account AND b.pool = p_pool;
END;
$$;
