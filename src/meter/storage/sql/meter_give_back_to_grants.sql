-- Give back up to p_tokens a won dispute unfreezes of what its freeze took from grants (an
-- invoice's months rolled over or converted: meter_take_from_grants), each grant what it lost to
-- the payment's freezes and has not had back, while it lives; an ended grant's share stays out
-- (it would have expired or been revoked by now). The account row is locked. Returns what the
-- balance got back.
CREATE OR REPLACE FUNCTION meter_give_back_to_grants(
    p_account text, p_payment_ref text, p_tokens bigint, p_ref text, p_now timestamptz, p_caller text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_frozen record;
    v_part bigint;
    v_left bigint := p_tokens;
    v_given bigint := 0;
BEGIN
    FOR v_frozen IN
        SELECT l.pool, -sum(l.amount)::bigint AS tokens, meter_grant_live(g, p_now) AS live
        FROM ledger_entries AS l
        INNER JOIN grants AS g ON g.account_id = l.account_id AND 'grant:' || g.grant_id = l.pool
        WHERE l.account_id = p_account AND l.note = p_payment_ref AND l.kind IN ('dispute_freeze', 'dispute_release')
        GROUP BY l.pool, g.account_id, g.grant_id
        HAVING sum(l.amount) < 0
        ORDER BY g.grant_id
    LOOP
        EXIT WHEN v_left = 0;
        v_part := least(v_left, v_frozen.tokens);
        v_left := v_left - v_part;
        IF v_frozen.live THEN
            PERFORM meter_credit(p_account, 'dispute_release', v_frozen.pool, v_part, p_ref, p_payment_ref, p_now,
                p_caller);
            v_given := v_given + v_part;
        END IF;
    END LOOP;
    RETURN v_given;
END;
$$;
