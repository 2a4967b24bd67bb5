-- Take p_amount from what an account has available at p_now, pool by pool in the order pools are
-- drawn (by priority, then the soonest expiry, then the oldest: the month's allowance before
-- purchased tokens, which never expire), spreading what each pool it took from has left; what no
-- pool covers is the shortfall. A pool whose expiry has come is not drawn (meter_end_grants ends
-- it). Returns the parts taken, in that order (pools and amounts). The caller has locked the rows
-- (meter_lock_buckets).
CREATE OR REPLACE FUNCTION meter_take(
    p_account text, p_amount bigint, p_now timestamptz,
    OUT part_pools text[], OUT part_amounts bigint[], OUT shortfall bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_pool record;
    v_part bigint;
BEGIN
    part_pools := '{}';
    part_amounts := '{}';
    shortfall := p_amount;
    FOR v_pool IN
        SELECT b.pool, sum(b.available)::bigint AS available FROM buckets AS b
        WHERE b.account_id = p_account AND b.available > 0 AND (b.expires_at IS NULL OR b.expires_at > p_now)
        GROUP BY b.pool, b.priority, b.expires_at, b.draw_seq ORDER BY b.priority, b.expires_at NULLS LAST, b.draw_seq
    LOOP
        EXIT WHEN shortfall = 0;
        v_part := least(shortfall, v_pool.available);
        PERFORM meter_spread(p_account, v_pool.pool, v_pool.available - v_part);
        part_pools := part_pools || v_pool.pool;
        part_amounts := part_amounts || v_part;
        shortfall := shortfall - v_part;
    END LOOP;
END;
$$;
