"""Webhooks out, sent continuously (issue 34): each endpoint gets a bounded number of sends at
once, so that a slow one never holds back another, and this schema keeps what that needs.

- An endpoint that does not answer within the send timeout is backed off: `timeouts` counts such
  attempts in a row and `backoff_until` is when it is sent to again (its other deliveries wait,
  nothing else does). An endpoint that answers 410 Gone is disabled (`disabled_at`, and why in
  `disabled_reason`): sent nothing until an operator resumes it, its deliveries kept pending.
- Claims look for due deliveries one endpoint at a time (webhook_deliveries_due, by endpoint),
  and only an account's oldest pending delivery to an endpoint is due: meter_emit queues the
  others (next attempt 'infinity') and the deliverer makes the next one due when the one before
  it is done. A claim's cost then follows the deliveries that can be sent, not the backlog of an
  endpoint that is down.

Frozen copy of src/meter/storage/sql/meter_emit.sql as it is at this revision; the downgrade
installs the copy of 0027 and makes every queued delivery due (that code's claims skip the ones
behind an earlier pending delivery themselves).

Revision ID: 0038
Revises: 0037
Create Date: 2026-12-02
"""

from alembic import op

revision = "0038"
down_revision = "0037"
branch_labels = None
depends_on = None

ENDPOINT_STATE = """ALTER TABLE webhook_endpoints
    ADD COLUMN disabled_at timestamptz,
    ADD COLUMN disabled_reason text,
    ADD COLUMN timeouts integer NOT NULL DEFAULT 0 CHECK (timeouts >= 0),
    ADD COLUMN backoff_until timestamptz"""

DUE_INDEX = """CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending'"""

# What 0027 wrote before: a pending delivery behind another of its account and endpoint was due
# at once (the claim skipped it). Queue those now, so that only each queue's head is due.
QUEUE_WAITING = """UPDATE webhook_deliveries AS d SET next_attempt_at = 'infinity'
WHERE d.status = 'pending' AND EXISTS (
    SELECT 1 FROM webhook_deliveries AS p
    WHERE p.account_id = d.account_id AND p.endpoint_id = d.endpoint_id AND p.status = 'pending'
      AND p.sequence < d.sequence
)"""

METER_EMIT = """CREATE OR REPLACE FUNCTION meter_emit(p_account text, p_type text, p_data jsonb, p_now timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
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
$$"""

METER_EMIT_0027 = """CREATE OR REPLACE FUNCTION meter_emit(p_account text, p_type text, p_data jsonb, p_now timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
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
    SELECT p_account, w.endpoint_id, v_sequence, p_now FROM webhook_endpoints AS w
    WHERE cardinality(w.event_types) = 0 OR p_type = ANY(w.event_types);
    PERFORM pg_notify('meter_balance_events', p_account);
    RETURN v_sequence;
END;
$$"""


def upgrade() -> None:
    op.execute(ENDPOINT_STATE)
    op.execute(DUE_INDEX)
    op.execute(QUEUE_WAITING)
    op.execute(METER_EMIT)


def downgrade() -> None:
    op.execute(METER_EMIT_0027)
    op.execute("UPDATE webhook_deliveries SET next_attempt_at = now() WHERE next_attempt_at = 'infinity'")
    op.execute("DROP INDEX webhook_deliveries_due")
    op.execute(
        "ALTER TABLE webhook_endpoints DROP COLUMN backoff_until, DROP COLUMN timeouts, "
        "DROP COLUMN disabled_reason, DROP COLUMN disabled_at"
    )
