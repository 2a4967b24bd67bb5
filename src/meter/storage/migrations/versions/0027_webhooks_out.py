"""Webhooks out: endpoints (a URL, its Standard Webhooks signing secret and the event types it
wants; none: every type; a paused one keeps its deliveries pending) and one delivery row per event and endpoint, written by meter_emit in the
transaction of the change. The deliverer of each replica claims the oldest pending delivery of each
account and endpoint (the others wait behind it: in order per account) with a lease, so two
replicas never send one at the same time; a replica killed mid-delivery leaves a lease that runs
out, and the delivery is sent again under the same webhook-id.

Frozen copy of src/meter/storage/sql/meter_emit.sql as it is at this revision; the downgrade
installs the copy of 0025.

Revision ID: 0027
Revises: 0026
Create Date: 2026-11-29
"""

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

WEBHOOK_ENDPOINTS = """CREATE TABLE webhook_endpoints (
    endpoint_id text PRIMARY KEY,
    url text NOT NULL,
    secret text NOT NULL,
    event_types text[] NOT NULL DEFAULT '{}',
    paused boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL
)"""

WEBHOOK_DELIVERIES = """CREATE TABLE webhook_deliveries (
    account_id text NOT NULL,
    endpoint_id text NOT NULL REFERENCES webhook_endpoints (endpoint_id),
    sequence bigint NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error text,
    delivered_at timestamptz,
    PRIMARY KEY (account_id, endpoint_id, sequence),
    FOREIGN KEY (account_id, sequence) REFERENCES balance_events (account_id, sequence)
)"""

PENDING_INDEX = (
    "CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (next_attempt_at) WHERE status = 'pending'"
)

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
    SELECT p_account, w.endpoint_id, v_sequence, p_now FROM webhook_endpoints AS w
    WHERE cardinality(w.event_types) = 0 OR p_type = ANY(w.event_types);
    PERFORM pg_notify('meter_balance_events', p_account);
    RETURN v_sequence;
END;
$$"""

METER_EMIT_0025 = """CREATE OR REPLACE FUNCTION meter_emit(p_account text, p_type text, p_data jsonb, p_now timestamptz)
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
    PERFORM pg_notify('meter_balance_events', p_account);
    RETURN v_sequence;
END;
$$"""


def upgrade() -> None:
    op.execute(WEBHOOK_ENDPOINTS)
    op.execute(WEBHOOK_DELIVERIES)
    op.execute(PENDING_INDEX)
    op.execute(METER_EMIT)


def downgrade() -> None:
    op.execute(METER_EMIT_0025)
    op.execute("DROP TABLE webhook_deliveries")
    op.execute("DROP TABLE webhook_endpoints")
