-- A credit into a pool (a purchase, an adjustment, a period's grant, a dispute won): it pays the
-- account's debt first (meter_pay_debt), and the rest is spread over the pool's rows. Writes the
-- ledger; returns the debt paid, and when it paid any, the debt's facts follow (meter_debt_events).
-- The caller has locked the account row.
CREATE OR REPLACE FUNCTION meter_credit(
    p_account text, p_kind text, p_pool text, p_amount bigint, p_ref text, p_note text, p_now timestamptz,
    p_caller text
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_left bigint;
BEGIN
    INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, ref, note)
    VALUES (p_account, p_now, p_caller, p_kind, p_pool, p_amount, p_ref, p_note);
    SELECT d.amounts_left[1] INTO v_left
    FROM meter_pay_debt(p_account, ARRAY[p_pool], ARRAY[p_amount], p_ref, NULL, p_now, p_caller) AS d;
    PERFORM meter_lock_buckets(p_account);
    PERFORM meter_spread(p_account, p_pool, v_left + (
        SELECT coalesce(sum(b.available), 0)::bigint FROM buckets AS b
        WHERE b.account_id = p_account AND b.pool = p_pool
    ));
    IF v_left < p_amount THEN
        PERFORM meter_debt_events(p_account, p_ref, p_now);
    END IF;
    RETURN p_amount - v_left;
END;
$$;
