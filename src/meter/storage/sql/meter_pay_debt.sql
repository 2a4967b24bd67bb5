-- Tokens coming in (a credit, or what a hold gives back: p_amounts to pools p_pools) pay the
-- account's debt first, in the order given (a hold's parts in the order it drew them, the
-- allowance first): an account never shows tokens available while it owes some. Writes the
-- payment to the ledger and the account; returns what is left of each amount, and the debt left.
-- The caller has locked the account row.
CREATE OR REPLACE FUNCTION meter_pay_debt(
    p_account text, p_pools text[], p_amounts bigint[], p_ref text, p_reservation text,
    p_now timestamptz, p_caller text,
    OUT amounts_left bigint[], OUT debt_left bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_paid bigint[] := '{}';
    v_part bigint;
    v_i integer;
BEGIN
    SELECT a.debt INTO debt_left FROM accounts AS a WHERE a.account_id = p_account;
    amounts_left := p_amounts;
    FOR v_i IN 1 .. coalesce(cardinality(p_amounts), 0) LOOP
        v_part := least(debt_left, p_amounts[v_i]);
        v_paid := v_paid || v_part;
        amounts_left[v_i] := p_amounts[v_i] - v_part;
        debt_left := debt_left - v_part;
    END LOOP;
    IF coalesce((SELECT sum(p) FROM unnest(v_paid) AS p), 0) = 0 THEN
        RETURN;
    END IF;
    UPDATE accounts AS a SET debt = debt_left, updated_at = p_now WHERE a.account_id = p_account;
    INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, reservation_id, ref)
    SELECT p_account, p_now, p_caller, 'debt_payment', v.pool, v.amount, p_reservation, p_ref
    FROM (
        SELECT p.n, p.pool, -p.paid AS amount FROM unnest(p_pools, v_paid) WITH ORDINALITY AS p (pool, paid, n)
        UNION ALL SELECT cardinality(p_pools) + 1, 'debt', (SELECT sum(p) FROM unnest(v_paid) AS p)::bigint
    ) AS v (n, pool, amount)
    WHERE v.amount <> 0 ORDER BY v.n;
END;
$$;
