"""Retention of stored Stripe payloads (issue 23): the raw body of a webhook event is deleted once
the event has not changed for METER_WEBHOOK_PAYLOAD_RETENTION_DAYS (the sweeper, in batches). The
row stays, with its id, type, status, reason and account, so that a late redelivery of the event
is still recognised and changes nothing; it records when its payload was pruned and how many
bytes it held, which is what `meter retention` reports. A pruned payload is the empty bytea
rather than NULL: every reader of the column keeps working, and the downgrade has nothing to undo.

The downgrade drops the bookkeeping; pruned rows keep their empty payload (what was deleted
cannot come back).

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-01
"""

from alembic import op

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None

WEBHOOK_EVENTS_PRUNED = """ALTER TABLE webhook_events
    ADD COLUMN payload_pruned_at timestamptz,
    ADD COLUMN pruned_payload_bytes integer"""

# NOT VALID: the rows already there have no payload_pruned_at, so they satisfy it; validating
# would only scan the whole table under its lock while `meter serve` migrates.
WEBHOOK_EVENTS_PRUNED_CHECK = """ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_pruned_check CHECK (
    payload_pruned_at IS NULL
    OR (octet_length(payload) = 0 AND pruned_payload_bytes IS NOT NULL AND pruned_payload_bytes >= 0)
) NOT VALID"""

# What the sweeper looks for every pass: payloads still stored, oldest change first. Pruned rows
# leave the index, so it holds only the payloads within the window (and those due).
WEBHOOK_EVENTS_PAYLOAD_DUE = """CREATE INDEX webhook_events_payload_due ON webhook_events (updated_at)
    WHERE payload_pruned_at IS NULL"""


def upgrade() -> None:
    op.execute(WEBHOOK_EVENTS_PRUNED)
    op.execute(WEBHOOK_EVENTS_PRUNED_CHECK)
    op.execute(WEBHOOK_EVENTS_PAYLOAD_DUE)


def downgrade() -> None:
    op.execute("DROP INDEX webhook_events_payload_due")
    op.execute("ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_pruned_check")
    op.execute("ALTER TABLE webhook_events DROP COLUMN pruned_payload_bytes, DROP COLUMN payload_pruned_at")
