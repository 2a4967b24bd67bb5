-- Credit a pack that expires (its catalog entry's expires_after_days, pinned at sale): its tokens
-- become a grant of source 'purchase' of their own, expiring at p_expires_at, drawn with the
-- account's other pools in the one order (priority 0, then the soonest expiry); they come in as
-- any purchase does ('purchase' entry, paying debt first) and the purchase remembers its grant,
-- which a refund or dispute takes back from (meter_take_back). The caller has locked the account
-- row and recorded the purchase. Returns the grant's id.
CREATE OR REPLACE FUNCTION meter_credit_pack_grant(
    p_account text, p_payment_ref text, p_pack_id text, p_tokens bigint, p_expires_at timestamptz,
    p_now timestamptz, p_caller text
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_open record;
BEGIN
    v_open := meter_open_grant(p_account, 'purchase:' || p_payment_ref, 'purchase', p_tokens, 0, p_expires_at,
        p_pack_id, p_now, p_caller);
    PERFORM meter_credit(p_account, 'purchase', 'grant:' || (v_open.granted).grant_id, p_tokens, p_payment_ref,
        p_pack_id, p_now, p_caller);
    UPDATE purchases AS p SET grant_id = (v_open.granted).grant_id
    WHERE p.account_id = p_account AND p.payment_ref = p_payment_ref;
    RETURN (v_open.granted).grant_id;
END;
$$;
