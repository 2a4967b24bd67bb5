-- Give back p_tokens a won dispute unfreezes (a 'dispute_release'), the account row locked. A
-- pack's go back to the purchased pool. A subscription invoice's: what the freeze withheld from
-- its months not yet begun is theirs again; the rest goes back to the current month's allowance
-- while the invoice pays for that month, else (its months ended: what left the allowance would
-- have expired by now) only what was debt when frozen comes back, as purchased tokens, and the
-- rest is unused allowance again (no longer claimed). A credit pays the debt first (meter_credit).
-- Returns what the balance got back.
CREATE OR REPLACE FUNCTION meter_give_back(
    p_account text, p_payment_kind text, p_payment_ref text, p_tokens bigint, p_ref text, p_now timestamptz,
    p_caller text
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_account accounts%ROWTYPE;
    v_payment subscription_payments%ROWTYPE;
    v_unwithheld bigint;
    v_left bigint;
BEGIN
    IF p_payment_kind = 'pack' THEN
        PERFORM meter_credit(p_account, 'dispute_release', 'purchased', p_tokens, p_ref, p_payment_ref, p_now,
            p_caller);
        RETURN p_tokens;
    END IF;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    SELECT * INTO v_payment FROM subscription_payments AS s
    WHERE s.account_id = p_account AND s.invoice_ref = p_payment_ref FOR UPDATE;
    v_unwithheld := least(p_tokens, v_payment.frozen_withheld);
    v_left := p_tokens - v_unwithheld;
    UPDATE subscription_payments AS s SET withheld_tokens = s.withheld_tokens - v_unwithheld,
        frozen_withheld = s.frozen_withheld - v_unwithheld, frozen_debt = 0,
        cover_claimed = s.cover_claimed - CASE
            WHEN v_payment.period_start <= v_account.period_start AND v_account.period_start < v_payment.period_end
                THEN 0
            ELSE greatest(0, v_left - v_payment.frozen_debt)
        END
    WHERE s.account_id = p_account AND s.invoice_ref = p_payment_ref;
    IF v_left > 0 AND v_payment.period_start <= v_account.period_start
        AND v_account.period_start < v_payment.period_end THEN
        PERFORM meter_credit(p_account, 'dispute_release', 'allowance', v_left, p_ref, p_payment_ref, p_now,
            p_caller);
        RETURN v_left;
    END IF;
    v_left := least(v_left, v_payment.frozen_debt);
    IF v_left > 0 THEN
        PERFORM meter_credit(p_account, 'dispute_release', 'purchased', v_left, p_ref, p_payment_ref, p_now,
            p_caller);
    END IF;
    RETURN v_left;
END;
$$;
