-- A hold's ledger entries, each (kind, pool) once, in one order: what it charged (usage,
-- negative) or gave back (usage, positive) from each pool, the allowance first and the debt last,
-- then what expired. p_kinds, p_pools and p_amounts are the parts, in any order, several a pool
-- at will (summed); zero sums write nothing.
CREATE OR REPLACE FUNCTION meter_hold_entries(
    p_account text, p_reservation text, p_now timestamptz, p_caller text, p_kinds text[], p_pools text[],
    p_amounts bigint[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, reservation_id)
    SELECT p_account, p_now, p_caller, e.kind, e.pool, sum(e.amount), p_reservation
    FROM unnest(p_kinds, p_pools, p_amounts) AS e (kind, pool, amount)
    GROUP BY e.kind, e.pool
    HAVING sum(e.amount) <> 0
    ORDER BY e.kind = 'expiry', CASE e.pool WHEN 'allowance' THEN 0 WHEN 'debt' THEN 2 ELSE 1 END, e.pool;
END;
$$;
