-- Record a fact about an account as a balance event, in the transaction that made the change it
-- describes (a transactional outbox: the event exists if and only if its change was committed).
-- Events are numbered per account 1, 2, 3 … without gaps, by a counting row taken after every
-- other row of the change (it is the last lock any change takes, so it adds no order to wait in);
-- the payload is p_data with the account's balance after the change under 'balance' (the columns
-- of meter_balance). A notice on channel meter_balance_events, with the account id, tells the
-- replicas' watchers (WatchEvents) when the change commits (PostgreSQL sends notices at commit,
-- and none for a change rolled back). Each webhook endpoint that wants the type (paused or not) gets
-- a pending delivery of it, in the same transaction (the deliverer sends it later, never the change's
-- caller). A delivery behind a pending one of the same account and endpoint is queued (next attempt
-- 'infinity': the deliverer's claims never look at it) until the one before it is done, which makes
-- it due; the earlier pending row is locked FOR SHARE, so that it cannot be done between this look
-- and this commit without seeing the queued row. Returns the event's number.
CREATE OR REPLACE FUNCTION meter_emit(p_account text, p_type text, p_data jsonb, p_now timestamptz)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_sequence bigint;
    v_account accounts%ROWTYPE;
BEGIN
    INSERT INTO balance_event_sequences AS s (account_id, last_sequence) VALUES (p_account, 1)
    ON CONFLICT (account_id) DO UPDATE SET last_sequence = s.last_sequence + 1
    RETURNING s.last_sequence INTO v_sequence;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    INSERT INTO balance_events (account_id, sequence, type, occurred_at, payload)
    SELECT p_account, v_sequence, p_type, p_now, p_data || jsonb_build_object('balance', to_jsonb(b))
    FROM meter_balance(v_account) AS b;
    INSERT INTO webhook_deliveries (account_id, endpoint_id, sequence, next_attempt_at)
    SELECT p_account, w.endpoint_id, v_sequence, CASE WHEN earlier.sequence IS NULL THEN p_now ELSE 'infinity' END
    FROM webhook_endpoints AS w
    LEFT JOIN LATERAL (
        SELECT d.sequence FROM webhook_deliveries AS d
        WHERE d.account_id = p_account AND d.endpoint_id = w.endpoint_id AND d.status = 'pending'
        ORDER BY d.sequence
        LIMIT 1
        FOR SHARE
    ) AS earlier ON true
    WHERE cardinality(w.event_types) = 0 OR p_type = ANY(w.event_types);
    PERFORM pg_notify('meter_balance_events', p_account);
    RETURN v_sequence;
END;
$$;
