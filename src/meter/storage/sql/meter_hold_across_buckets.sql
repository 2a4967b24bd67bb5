-- Place a hold of p_amount that no single row has: every row locked in order, the amount taken
-- pool by pool in the order pools are drawn (meter_take, which evens each pool it took from out
-- again so the next holds fit one row), and each part parked on its pool's row p_first; the row
-- of the first part counts the hold. Exact: it refuses (part_pools NULL, nothing changed) only
-- what the account truly does not have. What even the committed rows do not add up to is refused
-- before any lock is taken: otherwise every refused Reserve of a drained account queues for all
-- its rows, one after the other (one of 163 ran past the lock timeout on a slow machine).
CREATE OR REPLACE FUNCTION meter_hold_across_buckets(
    p_account text, p_amount bigint, p_first smallint, p_window timestamptz, p_now timestamptz,
    OUT part_pools text[], OUT part_held bigint[]
) LANGUAGE plpgsql AS $$
DECLARE
    v_taken record;
BEGIN
    IF (SELECT coalesce(sum(b.available), 0) FROM buckets AS b
        WHERE b.account_id = p_account AND (b.expires_at IS NULL OR b.expires_at > p_now)) < p_amount THEN
        RETURN;  -- short as last committed: refused without waiting for a lock
    END IF;
    PERFORM meter_lock_buckets(p_account);
    IF (SELECT coalesce(sum(b.available), 0) FROM buckets AS b
        WHERE b.account_id = p_account AND (b.expires_at IS NULL OR b.expires_at > p_now)) < p_amount THEN
        RETURN;  -- short once every row is locked
    END IF;
    v_taken := meter_take(p_account, p_amount, p_now);
    part_pools := v_taken.part_pools;
    part_held := v_taken.part_amounts;
    UPDATE buckets AS b SET held = b.held + p.amount,
        open_holds = b.open_holds + CASE WHEN p.n = 1 THEN 1 ELSE 0 END,
        rate_requests = CASE WHEN p.n > 1 THEN b.rate_requests
            WHEN b.rate_window = p_window THEN b.rate_requests + 1 ELSE 1 END,
        rate_tokens = CASE WHEN p.n > 1 THEN b.rate_tokens
            WHEN b.rate_window = p_window THEN b.rate_tokens + p_amount ELSE p_amount END,
        rate_window = CASE WHEN p.n > 1 THEN b.rate_window ELSE p_window END
    FROM unnest(part_pools, part_held) WITH ORDINALITY AS p (pool, amount, n)
    WHERE b.account_id = p_account AND b.pool = p.pool AND b.bucket = p_first;
END;
$$;
