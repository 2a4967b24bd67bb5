-- Take up to p_tokens back from the live grants whose request_id starts with p_prefix (what a
-- cancellation converted of, or a month's end rolled over from, a paid month: named after its
-- invoice), in the order they are drawn, each grant's rows locked with the account's and what is
-- left spread again; a p_kind entry ('refund', 'dispute_freeze') on each, naming the payment.
-- Returns what was taken.
CREATE OR REPLACE FUNCTION meter_take_from_grants(
    p_account text, p_prefix text, p_tokens bigint, p_kind text, p_ref text, p_payment_ref text,
    p_now timestamptz, p_caller text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_grant grants%ROWTYPE;
    v_pool text;
    v_available bigint;
    v_part bigint;
    v_taken bigint := 0;
BEGIN
    FOR v_grant IN
        SELECT * FROM grants AS g
        WHERE g.account_id = p_account AND g.ended_at IS NULL AND left(g.request_id, length(p_prefix)) = p_prefix
        ORDER BY g.priority, g.expires_at NULLS LAST, g.grant_id
    LOOP
        EXIT WHEN v_taken = p_tokens;
        v_pool := 'grant:' || v_grant.grant_id;
        PERFORM meter_lock_buckets(p_account);
        SELECT coalesce(sum(b.available), 0)::bigint INTO v_available FROM buckets AS b
        WHERE b.account_id = p_account AND b.pool = v_pool;
        v_part := least(p_tokens - v_taken, v_available);
        CONTINUE WHEN v_part = 0;
        PERFORM meter_spread(p_account, v_pool, v_available - v_part);
        INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, ref, note)
        VALUES (p_account, p_now, p_caller, p_kind, v_pool, -v_part, p_ref, p_payment_ref);
        v_taken := v_taken + v_part;
    END LOOP;
    RETURN v_taken;
END;
$$;
