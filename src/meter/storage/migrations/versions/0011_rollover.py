"""A plan may roll its unused allowance over (issue 37): at each month's end at most its
rollover_cap_tokens of what is left becomes a grant of its own (source 'rollover') that lives
rollover_days from the new month's start, instead of expiring. The account carries its plan's
terms (accounts.rollover_cap, rollover_days), since the month ends in SQL (meter_begin_period).

Forward-only: restore the backup taken before upgrading to go back (docs/operate.md).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

STATEMENTS = (
    """ALTER TABLE accounts ADD COLUMN rollover_cap bigint CONSTRAINT accounts_rollover_cap_check CHECK (rollover_cap > 0),
    ADD COLUMN rollover_days integer CONSTRAINT accounts_rollover_days_check CHECK (rollover_days BETWEEN 1 AND 3650),
    ADD CONSTRAINT accounts_rollover_check CHECK ((rollover_cap IS NULL) = (rollover_days IS NULL))""",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("forward-only: restore the backup taken before the upgrade")
