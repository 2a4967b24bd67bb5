-- Expiry (the sweeper's): give back a hold still open past its expiry (meter_settle with no
-- charge); a late Commit is then charged from what the account has available. Outcomes:
-- 'expired', 'skipped' (settled meanwhile, or not yet due), 'period_ended' (nothing changed: the
-- service moves the account into its current period and calls again). Installed by migration
-- 0017.
CREATE OR REPLACE FUNCTION meter_expire(
    p_account text, p_hold uuid, p_reservation text, p_clock_offset double precision, p_caller text
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_hold holds%ROWTYPE;
    v_account accounts%ROWTYPE;
BEGIN
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    IF NOT FOUND OR v_hold.status <> 'open' OR v_now < v_hold.expires_at THEN
        RETURN 'skipped';
    END IF;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF v_account.period_end <= v_now THEN
        RETURN 'period_ended';
    END IF;
    PERFORM meter_settle(v_hold, v_account, 0, 'expired', p_reservation, v_now, p_caller);
    RETURN 'expired';
END;
$$;
