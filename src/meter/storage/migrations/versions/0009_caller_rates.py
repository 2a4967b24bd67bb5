"""Per-caller request counts, written by each replica for itself.

caller_rate_counts: how many calls of a caller to a method one replica admitted in one second.
Each replica writes only its own rows, every sync interval (METER_CALLER_RATE_SYNC_MS), and reads
the others'; rows older than a minute are deleted by the replicas as they sync. No row is written
by every call, nor by more than one replica.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
CREATE TABLE caller_rate_counts (
    caller   text NOT NULL,
    method   text NOT NULL,
    second   bigint NOT NULL,
    replica  uuid NOT NULL,
    count    bigint NOT NULL CHECK (count > 0),
    PRIMARY KEY (caller, method, second, replica)
)"""
    )


def downgrade() -> None:
    op.execute("DROP TABLE caller_rate_counts")
