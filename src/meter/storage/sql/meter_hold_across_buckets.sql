-- Place a hold of p_amount that no single row has: every row locked in order, the amount taken
-- allowance first from the pools' totals (meter_take, which evens the pools out again so the next
-- holds fit one row), and parked on the rows of bucket p_first, which count the hold. Exact: it
-- refuses (from_allowance NULL, nothing changed) only what the account truly does not have. What
-- even the committed rows do not add up to is refused before any lock is taken: otherwise every
-- refused Reserve of a drained account queues for all its rows, one after the other (one of 163
-- ran past the lock timeout on a slow machine).
CREATE OR REPLACE FUNCTION meter_hold_across_buckets(
    p_account text, p_amount bigint, p_first smallint, p_window timestamptz,
    OUT from_allowance bigint, OUT from_purchased bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_taken record;
BEGIN
    IF (SELECT coalesce(sum(b.available), 0) FROM buckets AS b WHERE b.account_id = p_account) < p_amount THEN
        RETURN;  -- short as last committed: refused without waiting for a lock
    END IF;
    PERFORM meter_lock_buckets(p_account);
    IF (SELECT coalesce(sum(b.available), 0) FROM buckets AS b WHERE b.account_id = p_account) < p_amount THEN
        RETURN;  -- short once every row is locked
    END IF;
    v_taken := meter_take(p_account, p_amount);
    from_allowance := v_taken.from_allowance;
    from_purchased := v_taken.from_purchased;
    UPDATE buckets AS b SET
        held = b.held + CASE WHEN b.pool = 'allowance' THEN from_allowance ELSE from_purchased END,
        open_holds = b.open_holds + CASE WHEN (b.pool = 'allowance') = (from_allowance > 0) THEN 1 ELSE 0 END,
        rate_requests = CASE WHEN (b.pool = 'allowance') <> (from_allowance > 0) THEN b.rate_requests
            WHEN b.rate_window = p_window THEN b.rate_requests + 1 ELSE 1 END,
        rate_tokens = CASE WHEN (b.pool = 'allowance') <> (from_allowance > 0) THEN b.rate_tokens
            WHEN b.rate_window = p_window THEN b.rate_tokens + p_amount ELSE p_amount END,
        rate_window = CASE WHEN (b.pool = 'allowance') <> (from_allowance > 0) THEN b.rate_window
            ELSE p_window END
    WHERE b.account_id = p_account AND b.bucket = p_first;
END;
$$;
