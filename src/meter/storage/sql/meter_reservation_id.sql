-- The id callers see for a hold: its account, a slash, and the hold's uuid without dashes. The one
-- place it is composed (Reserve's and ChargeUsage's answers, the ledger's refs, ListReservations);
-- the service only reads an id a caller sends back (domain/ids.py).
CREATE OR REPLACE FUNCTION meter_reservation_id(p_account text, p_hold uuid)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT p_account || '/' || replace(CAST(p_hold AS text), '-', '')
$$;
