-- The part of p_withheld (tokens a payment's refunds or disputes withheld from its months before
-- they began, its last months first, each at most its per-month share) that falls on its month
-- ending at p_month_end: what the months after it do not cover.
CREATE OR REPLACE FUNCTION meter_month_withheld(
    p_payment subscription_payments, p_month_end timestamptz, p_withheld bigint
) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_payment.months = 0 THEN
        RETURN 0;
    END IF;
    RETURN least(p_payment.tokens / p_payment.months,
        greatest(0, p_withheld - meter_tokens_to_come(p_payment, p_month_end)));
END;
$$;
