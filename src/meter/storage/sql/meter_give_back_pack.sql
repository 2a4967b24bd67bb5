-- Give back p_tokens of a pack a won dispute unfreezes (a 'dispute_release'): to the purchased
-- pool, or for a pack that expires to its own grant while that grant is live. What the freeze took
-- from what had expired of the grant comes back to nothing (no longer claimed: it expired); once
-- the grant has ended, only what was debt when frozen comes back, as purchased tokens (the rest
-- would have expired by now). A credit pays the debt first (meter_credit). The account row is
-- locked. Returns what the balance got back.
CREATE OR REPLACE FUNCTION meter_give_back_pack(
    p_account text, p_payment_ref text, p_tokens bigint, p_ref text, p_now timestamptz, p_caller text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_purchase purchases%ROWTYPE;
    v_uncovered bigint;
    v_given bigint;
    v_live boolean;
BEGIN
    SELECT * INTO v_purchase FROM purchases AS p
    WHERE p.account_id = p_account AND p.payment_ref = p_payment_ref FOR UPDATE;
    IF v_purchase.grant_id IS NULL THEN
        PERFORM meter_credit(p_account, 'dispute_release', 'purchased', p_tokens, p_ref, p_payment_ref, p_now,
            p_caller);
        RETURN p_tokens;
    END IF;
    SELECT meter_grant_live(g, p_now) INTO v_live
    FROM grants AS g WHERE g.account_id = p_account AND g.grant_id = v_purchase.grant_id;
    v_uncovered := least(p_tokens, v_purchase.frozen_cover);
    v_given := CASE WHEN v_live THEN p_tokens - v_uncovered ELSE least(p_tokens - v_uncovered, v_purchase.frozen_debt) END;
    UPDATE purchases AS p SET cover_claimed = p.cover_claimed - v_uncovered, frozen_cover = p.frozen_cover - v_uncovered,
        frozen_debt = 0
    WHERE p.account_id = p_account AND p.payment_ref = p_payment_ref;
    IF v_given > 0 THEN
        PERFORM meter_credit(p_account, 'dispute_release', CASE WHEN v_live THEN 'grant:' || v_purchase.grant_id
            ELSE 'purchased' END, v_given, p_ref, p_payment_ref, p_now, p_caller);
    END IF;
    RETURN v_given;
END;
$$;
