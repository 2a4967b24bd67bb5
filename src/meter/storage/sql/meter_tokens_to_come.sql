-- What a subscription payment bought of its allowance months that begin at or after p_after
-- (its months counted from the anchor it was paid under, each its per-month share, tokens /
-- months): what a refund may withhold from months not begun, and what covers them.
CREATE OR REPLACE FUNCTION meter_tokens_to_come(p_payment subscription_payments, p_after timestamptz)
RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_payment.months = 0 THEN
        RETURN 0;
    END IF;
    RETURN meter_months_beginning(p_payment.month_anchor, greatest(p_after, p_payment.period_start),
        p_payment.period_end) * (p_payment.tokens / p_payment.months);
END;
$$;
