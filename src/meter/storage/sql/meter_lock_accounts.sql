-- A coalesced batch's first step: take, for every account it has calls of, a lock that only
-- batches take (a transaction-scoped advisory lock, class 2026 and the hash of the account id), in
-- the order of their keys. A batch may carry several calls of one account, which lock that account's
-- rows in another order than one call does; two batches of one account could then each hold a row
-- the other waits for, and a deadlock costs a second (deadlock_timeout) before a retry. With this
-- lock, the batches of an account run one after the other (a call alone takes no such lock: it
-- locks the rows in the one order), and since every batch takes its locks in one order, before
-- any row, batches never wait for each other in a circle.
CREATE OR REPLACE FUNCTION meter_lock_accounts(p_accounts text[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_key integer;
BEGIN
    FOR v_key IN SELECT DISTINCT hashtext(a) AS k FROM unnest(p_accounts) AS a ORDER BY k LOOP
        PERFORM pg_advisory_xact_lock(2026, v_key);
    END LOOP;
END;
$$;
