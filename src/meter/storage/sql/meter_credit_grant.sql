-- The tokens of a grant just opened (meter_open_grant) come in as any credit does, paying the
-- account's debt first (meter_credit, a 'grant' entry on its own pool, ref p_ref), and
-- grant.created tells it. The one home of a grant's first credit and its event, for Grant, a
-- month's rollover and a cancellation's conversion. The caller has locked the account row.
-- Returns the debt it paid.
CREATE OR REPLACE FUNCTION meter_credit_grant(
    p_account text, p_grant grants, p_ref text, p_now timestamptz, p_caller text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_paid bigint;
BEGIN
    v_paid := meter_credit(p_account, 'grant', 'grant:' || p_grant.grant_id, p_grant.tokens, p_ref, p_grant.reason,
        p_now, p_caller);
    PERFORM meter_emit(p_account, 'grant.created', jsonb_build_object('grant_id', p_grant.grant_id,
        'source', p_grant.source, 'tokens', p_grant.tokens, 'priority', p_grant.priority, 'expires_at',
        to_char(p_grant.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), 'reason', p_grant.reason,
        'debt_paid', v_paid), p_now);
    RETURN v_paid;
END;
$$;
