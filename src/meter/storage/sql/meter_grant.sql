-- Grant: tokens of their own to an account (a promotion, goodwill, an adjustment that expires),
-- drawn in the order every pool is (priority, then the soonest expiry, then the oldest), exactly
-- once by p_request. The grant gets its own rows (meter_open_grant), and its tokens come in as any
-- credit does, and grant.created tells it (meter_credit_grant). Outcomes: 'granted', 'replayed'
-- (this request_id granted before with the same terms: that grant), 'request_reused' (before, with
-- other terms; reused_field names one), 'account_not_found'. Returns the grant.
CREATE OR REPLACE FUNCTION meter_grant(
    p_account text, p_request text, p_source text, p_tokens bigint, p_priority integer,
    p_expires_at timestamptz, p_reason text, p_now timestamptz, p_caller text,
    OUT outcome text, OUT reused_field text, OUT granted grants
) LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_account accounts%ROWTYPE;
    v_open record;
BEGIN
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'account_not_found';
        RETURN;
    END IF;
    v_open := meter_open_grant(p_account, p_request, p_source, p_tokens, p_priority, p_expires_at, p_reason, p_now,
        p_caller);
    granted := v_open.granted;
    IF NOT v_open.opened THEN
        reused_field := CASE
            WHEN granted.tokens <> p_tokens THEN 'tokens'
            WHEN granted.source <> p_source THEN 'source'
            WHEN granted.priority <> p_priority THEN 'priority'
            WHEN granted.expires_at IS DISTINCT FROM p_expires_at THEN 'expires_at'
            WHEN granted.reason <> p_reason THEN 'reason'
        END;
        outcome := CASE WHEN reused_field IS NULL THEN 'replayed' ELSE 'request_reused' END;
        RETURN;
    END IF;
    PERFORM meter_credit_grant(p_account, granted, p_request, p_now, p_caller);
    outcome := 'granted';
END;
$$;
