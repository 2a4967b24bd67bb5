-- Place a hold of p_amount on one row of a pool that has it, without waiting for a row another
-- call holds locked, trying the rows from p_first on (concurrent calls start at different rows);
-- when every row with the tokens is locked, wait up to p_wait_ms for the first of them rather
-- than lock them all. The row counts the hold (one more open hold, one more request with its
-- tokens in the minute starting at p_window). Returns the bucket, NULL when no row took it.
CREATE OR REPLACE FUNCTION meter_hold_in_one_bucket(
    p_account text, p_pool text, p_amount bigint, p_first smallint, p_rows smallint, p_window timestamptz,
    p_wait_ms integer
) RETURNS smallint LANGUAGE plpgsql AS $$
DECLARE
    v_bucket smallint;
    v_wait smallint;
    v_lock_timeout text;
BEGIN
    WITH pick AS MATERIALIZED (
        SELECT b.bucket FROM buckets AS b
        WHERE b.account_id = p_account AND b.pool = p_pool AND b.available >= p_amount
        ORDER BY (b.bucket + p_rows - p_first) % p_rows
        LIMIT 1 FOR UPDATE SKIP LOCKED
    )
    UPDATE buckets AS b SET available = b.available - p_amount, held = b.held + p_amount,
        open_holds = b.open_holds + 1,
        rate_requests = CASE WHEN b.rate_window = p_window THEN b.rate_requests + 1 ELSE 1 END,
        rate_tokens = CASE WHEN b.rate_window = p_window THEN b.rate_tokens + p_amount ELSE p_amount END,
        rate_window = p_window
    FROM pick WHERE b.account_id = p_account AND b.pool = p_pool AND b.bucket = pick.bucket
    RETURNING b.bucket INTO v_bucket;
    IF v_bucket IS NOT NULL OR p_wait_ms <= 0 THEN
        RETURN v_bucket;
    END IF;
    SELECT b.bucket INTO v_wait FROM buckets AS b
    WHERE b.account_id = p_account AND b.pool = p_pool AND b.available >= p_amount
    ORDER BY (b.bucket + p_rows - p_first) % p_rows LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_lock_timeout := current_setting('lock_timeout');
    BEGIN
        PERFORM set_config('lock_timeout', p_wait_ms || 'ms', true);
        UPDATE buckets AS b SET available = b.available - p_amount, held = b.held + p_amount,
            open_holds = b.open_holds + 1,
            rate_requests = CASE WHEN b.rate_window = p_window THEN b.rate_requests + 1 ELSE 1 END,
            rate_tokens = CASE WHEN b.rate_window = p_window THEN b.rate_tokens + p_amount ELSE p_amount END,
            rate_window = p_window
        WHERE b.account_id = p_account AND b.pool = p_pool AND b.bucket = v_wait AND b.available >= p_amount
        RETURNING b.bucket INTO v_bucket;
    EXCEPTION WHEN lock_not_available THEN
        v_bucket := NULL;  -- a queue: the caller takes from all rows instead
    END;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
    RETURN v_bucket;
END;
$$;
