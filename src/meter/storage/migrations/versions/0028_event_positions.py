"""A position across accounts for every balance event: the id of the transaction that wrote it
(xid8). Positions are not assigned in commit order, so a reader of all accounts reads only the
events of transactions older than every transaction still running (pg_snapshot_xmin): none can
then commit below what it has read, and resuming after the last position it saw misses nothing.

Revision ID: 0028
Revises: 0027
Create Date: 2026-11-29
"""

from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing events all get this migration's id: they sort before every later one.
    op.execute("ALTER TABLE balance_events ADD COLUMN transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id()")
    op.execute("CREATE INDEX balance_events_position ON balance_events (transaction_id, account_id, sequence)")


def downgrade() -> None:
    op.execute("DROP INDEX balance_events_position")
    op.execute("ALTER TABLE balance_events DROP COLUMN transaction_id")
