"""Watchers are told when events commit: meter_emit sends a notice on channel
meter_balance_events with the account id (PostgreSQL delivers it at commit, to every replica that
listens), so WatchEvents streams an event as soon as its change is committed, on any replica.

Frozen copy of src/meter/storage/sql/meter_emit.sql as it is at this revision; the downgrade
installs the copy of 0023.

Revision ID: 0025
Revises: 0024
Create Date: 2026-11-28
"""

from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

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
    PERFORM pg_notify('meter_balance_events', p_account);
    RETURN v_sequence;
END;
$$"""

METER_EMIT_0023 = """CREATE OR REPLACE FUNCTION meter_emit(p_account text, p_type text, p_data jsonb, p_now timestamptz)
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
    RETURN v_sequence;
END;
$$"""


def upgrade() -> None:
    op.execute(METER_EMIT)


def downgrade() -> None:
    op.execute(METER_EMIT_0023)
