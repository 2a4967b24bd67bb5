-- Take p_amount from what an account has available, allowance first (it expires, purchased
-- tokens do not), spreading what is left; what both pools cannot cover is the shortfall. The
-- caller has locked the rows (meter_lock_buckets).
CREATE OR REPLACE FUNCTION meter_take(
    p_account text, p_amount bigint,
    OUT from_allowance bigint, OUT from_purchased bigint, OUT shortfall bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_allowance bigint;
    v_purchased bigint;
BEGIN
    SELECT coalesce(sum(b.available) FILTER (WHERE b.pool = 'allowance'), 0),
        coalesce(sum(b.available) FILTER (WHERE b.pool = 'purchased'), 0)
    INTO v_allowance, v_purchased
    FROM buckets AS b WHERE b.account_id = p_account;
    from_allowance := least(p_amount, v_allowance);
    from_purchased := least(p_amount - from_allowance, v_purchased);
    shortfall := p_amount - from_allowance - from_purchased;
    PERFORM meter_spread(p_account, 'allowance', v_allowance - from_allowance);
    PERFORM meter_spread(p_account, 'purchased', v_purchased - from_purchased);
END;
$$;
