-- Expiry (the sweeper's): a hold still open past its expiry is given back (meter_settle with no
-- charge; a late Commit is then charged from what the account has available), or, with p_charge
-- (the account's expired holds are charged), charged its worst case as if committed with its
-- input and max output, and counted in the day's usage (a late Commit or Release then settles the
-- difference: meter_correct_expired). Outcomes: 'expired', 'charged' and 'skipped' (settled
-- meanwhile, or not yet due). An account whose period has ended is moved into its current one
-- first (meter_roll_over).
CREATE OR REPLACE FUNCTION meter_expire(
    p_account text, p_hold uuid, p_charge boolean, p_clock_offset double precision,
    p_caller text
) RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_hold holds%ROWTYPE;
    v_account accounts%ROWTYPE;
    v_settled record;
    v_counted bigint;
BEGIN
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    IF NOT FOUND OR v_hold.status <> 'open' OR v_now < v_hold.expires_at THEN
        RETURN 'skipped';
    END IF;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF v_account.period_end <= v_now OR v_account.next_grant_expiry <= v_now THEN
        v_account := meter_roll_over(p_account, v_now);
    END IF;
    IF NOT p_charge THEN
        PERFORM meter_settle(v_hold, v_account, 0, 'expired', v_now, p_caller);
        RETURN 'expired';
    END IF;
    -- The max output at the dearer of output and reasoning: the worst case Reserve held.
    v_hold := meter_priced_usage(v_hold, v_hold.input_tokens, 0, 0,
        CASE WHEN v_hold.reasoning_weight > v_hold.output_weight THEN 0 ELSE v_hold.max_output_tokens END,
        CASE WHEN v_hold.reasoning_weight > v_hold.output_weight THEN v_hold.max_output_tokens ELSE 0 END);
    v_hold.late := false;
    v_settled := meter_settle(v_hold, v_account, v_hold.charged_tokens, 'committed', v_now,
        p_caller);
    v_hold.unbilled_tokens := v_settled.shortfall;
    UPDATE holds AS h SET charged_at_expiry = true WHERE h.account_id = p_account AND h.hold_id = p_hold;
    v_counted := meter_count_usage(v_hold, v_now);
    RETURN 'charged';
END;
$$;
