-- An operator's Adjust of one pool, the account row locked: a bonus (p_delta > 0) is a credit that
-- pays the debt first (meter_credit); a correction (p_delta < 0) takes only what the pool has
-- available, never making debt by itself. Writes the ledger ('adjustment', ref the request id, note
-- the reason). Outcomes: 'adjusted', or 'insufficient' (nothing changed) with what is available.
CREATE OR REPLACE FUNCTION meter_adjust(
    p_account text, p_pool text, p_delta bigint, p_ref text, p_note text, p_now timestamptz, p_caller text,
    OUT outcome text, OUT available bigint
) LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF p_delta > 0 THEN
        PERFORM meter_credit(p_account, 'adjustment', p_pool, p_delta, p_ref, p_note, p_now, p_caller);
        outcome := 'adjusted';
        RETURN;
    END IF;
    PERFORM meter_lock_buckets(p_account);
    SELECT coalesce(sum(b.available), 0)::bigint INTO available FROM buckets AS b
    WHERE b.account_id = p_account AND b.pool = p_pool;
    IF available < -p_delta THEN
        outcome := 'insufficient';
        RETURN;
    END IF;
    PERFORM meter_spread(p_account, p_pool, available + p_delta);
    INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, ref, note)
    VALUES (p_account, p_now, p_caller, 'adjustment', p_pool, p_delta, p_ref, p_note);
    outcome := 'adjusted';
END;
$$;
