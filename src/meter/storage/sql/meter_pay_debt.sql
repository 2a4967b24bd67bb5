-- Tokens coming in (a credit, or what a hold gives back) pay the account's debt first, allowance
-- first: an account never shows tokens available while it owes some. Writes the payment to the
-- ledger and the account; returns what is left of each, and the debt left. The caller has locked the
-- account row.
CREATE OR REPLACE FUNCTION meter_pay_debt(
    p_account text, p_allowance bigint, p_purchased bigint, p_ref text, p_reservation text,
    p_now timestamptz, p_caller text,
    OUT allowance_left bigint, OUT purchased_left bigint, OUT debt_left bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_debt bigint;
    v_from_allowance bigint;
    v_from_purchased bigint;
BEGIN
    SELECT a.debt INTO v_debt FROM accounts AS a WHERE a.account_id = p_account;
    v_from_allowance := least(v_debt, p_allowance);
    v_from_purchased := least(v_debt - v_from_allowance, p_purchased);
    allowance_left := p_allowance - v_from_allowance;
    purchased_left := p_purchased - v_from_purchased;
    debt_left := v_debt - v_from_allowance - v_from_purchased;
    IF v_from_allowance + v_from_purchased = 0 THEN
        RETURN;
    END IF;
    UPDATE accounts AS a SET debt = a.debt - v_from_allowance - v_from_purchased, updated_at = p_now
    WHERE a.account_id = p_account;
    INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, reservation_id, ref)
    SELECT p_account, p_now, p_caller, 'debt_payment', v.pool, v.amount, p_reservation, p_ref
    FROM (VALUES (1, 'allowance', -v_from_allowance), (2, 'purchased', -v_from_purchased),
        (3, 'debt', v_from_allowance + v_from_purchased)) AS v (n, pool, amount)
    WHERE v.amount <> 0 ORDER BY v.n;
END;
$$;
