-- ExtendReservation: an open hold's expiry moves to now + p_ttl seconds. Outcomes: 'extended'
-- (with the new expiry), 'committed', 'released', 'expired' (past its expiry: given back, charged
-- its worst case, or not settled yet), 'not_found'.
CREATE OR REPLACE FUNCTION meter_extend(
    p_account text, p_hold uuid, p_ttl integer, p_clock_offset double precision,
    OUT outcome text, OUT expires_at timestamptz
) LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_hold holds%ROWTYPE;
BEGIN
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'not_found';
    ELSIF v_hold.charged_at_expiry THEN
        outcome := 'expired';
    ELSIF v_hold.status IN ('committed', 'released') THEN
        outcome := v_hold.status;
    ELSIF v_hold.status = 'expired' OR v_now >= v_hold.expires_at THEN
        outcome := 'expired';
    ELSE
        outcome := 'extended';
        expires_at := v_now + make_interval(secs => p_ttl);
        UPDATE holds AS h SET expires_at = v_now + make_interval(secs => p_ttl)
        WHERE h.account_id = p_account AND h.hold_id = p_hold;
    END IF;
END;
$$;
