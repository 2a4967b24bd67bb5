"""Balance events (a transactional outbox): every fact meter tells the product about an account
is a row of balance_events written by the transaction that made the change, numbered per account
without gaps (balance_event_sequences counts them), with the balance after the change in its
payload. meter_emit writes them.

Frozen copy of src/meter/storage/sql/meter_emit.sql as it is at this revision; the event types are
those of meter.domain.balance_events at this revision.

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-28
"""

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

BALANCE_EVENTS = """CREATE TABLE balance_events (
    account_id text NOT NULL REFERENCES accounts (account_id),
    sequence bigint NOT NULL CHECK (sequence > 0),
    event_id uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    type text NOT NULL CHECK (type IN ('purchase.credited', 'credit.reversed', 'dispute.won', 'allowance.granted', 'allowance.expired', 'plan.changed', 'plan.cancelled', 'balance.warning', 'balance.adjusted')),
    occurred_at timestamptz NOT NULL,
    payload jsonb NOT NULL,
    PRIMARY KEY (account_id, sequence)
)"""

BALANCE_EVENT_SEQUENCES = """CREATE TABLE balance_event_sequences (
    account_id text PRIMARY KEY REFERENCES accounts (account_id),
    last_sequence bigint NOT NULL CHECK (last_sequence > 0)
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
    RETURN v_sequence;
END;
$$"""


def upgrade() -> None:
    op.execute(BALANCE_EVENTS)
    op.execute(BALANCE_EVENT_SEQUENCES)
    op.execute(METER_EMIT)


def downgrade() -> None:
    op.execute("DROP FUNCTION meter_emit")
    op.execute("DROP TABLE balance_event_sequences")
    op.execute("DROP TABLE balance_events")
