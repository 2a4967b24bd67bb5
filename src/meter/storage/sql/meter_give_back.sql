-- Give back p_tokens a won dispute unfreezes (a 'dispute_release'), the account row locked. A
-- pack's go back where the freeze took them (meter_give_back_pack). A subscription invoice's go
-- back where the freeze took them (meter_take_back remembered it): to its months not yet begun
-- (their grants whole again), to what its ended months left unused (no longer claimed: it
-- expired), to the grants its months became (rolled over or converted) while each lives (once
-- ended, they would have expired by now), and the rest to the current month's allowance while
-- the invoice pays for that month: there, what it withheld from its months that began while the
-- dispute was open comes back too (the current month's grant whole again, the months that ended
-- their share as extra allowance now). Once its months have ended, only what was debt when frozen
-- comes back, as purchased tokens, and the allowance it took would have expired by now (unused
-- again). A credit pays the debt first (meter_credit), so what was debt comes back before the
-- grants. Returns what the balance got back.
CREATE OR REPLACE FUNCTION meter_give_back(
    p_account text, p_payment_kind text, p_payment_ref text, p_tokens bigint, p_ref text, p_now timestamptz,
    p_caller text
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_account accounts%ROWTYPE;
    v_payment subscription_payments%ROWTYPE;
    v_unwithheld bigint;
    v_uncovered bigint;
    v_ungranted bigint;
    v_left bigint;
    v_current boolean;
    v_given bigint;
    v_to_come bigint := 0;
    v_month_share bigint;
    v_begun bigint := 0;
BEGIN
    IF p_payment_kind = 'pack' THEN
        RETURN meter_give_back_pack(p_account, p_payment_ref, p_tokens, p_ref, p_now, p_caller);
    END IF;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    SELECT * INTO v_payment FROM subscription_payments AS s
    WHERE s.account_id = p_account AND s.invoice_ref = p_payment_ref FOR UPDATE;
    v_current := v_payment.period_start <= v_account.period_start AND v_account.period_start < v_payment.period_end;
    v_unwithheld := least(p_tokens, v_payment.frozen_withheld);
    v_uncovered := least(p_tokens - v_unwithheld, v_payment.frozen_cover);
    v_ungranted := least(p_tokens - v_unwithheld - v_uncovered, v_payment.frozen_granted);
    v_left := p_tokens - v_unwithheld - v_uncovered - v_ungranted;
    v_given := CASE WHEN v_current THEN v_left ELSE least(v_left, v_payment.frozen_debt) END;
    IF v_payment.months > 0 THEN
        -- Of what is no longer withheld, the months not begun hold their per-month share each (the
        -- last first); the rest had been withheld from months that began.
        v_to_come := meter_tokens_to_come(v_payment, v_account.period_end);
        IF v_current THEN
            v_begun := v_unwithheld - (least(v_payment.withheld_tokens, v_to_come)
                - least(v_payment.withheld_tokens - v_unwithheld, v_to_come));
            v_month_share := meter_month_withheld(v_payment, v_account.period_end,
                v_payment.withheld_tokens - v_unwithheld);
            UPDATE accounts AS a SET allowance_total = a.allowance_total
                    + greatest(0, a.allowance_withheld - v_month_share),
                allowance_withheld = least(a.allowance_withheld, v_month_share)
            WHERE a.account_id = p_account;
        END IF;
    END IF;
    UPDATE subscription_payments AS s SET withheld_tokens = s.withheld_tokens - v_unwithheld,
        frozen_withheld = s.frozen_withheld - v_unwithheld, frozen_cover = s.frozen_cover - v_uncovered,
        frozen_granted = s.frozen_granted - v_ungranted, frozen_debt = 0, cover_claimed = s.cover_claimed - v_uncovered - (v_left - v_given)
    WHERE s.account_id = p_account AND s.invoice_ref = p_payment_ref;
    IF v_given + v_begun > 0 THEN
        PERFORM meter_credit(p_account, 'dispute_release', CASE WHEN v_current THEN 'allowance' ELSE 'purchased' END,
            v_given + v_begun, p_ref, p_payment_ref, p_now, p_caller);
    END IF;
    RETURN v_given + v_begun + meter_give_back_to_grants(p_account, p_payment_ref, v_ungranted, p_ref, p_now, p_caller);
END;
$$;
