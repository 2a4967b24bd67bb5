"""Budgets tell too: the warning levels a budget's period has announced (issue 37).

As an account's (accounts.warned_levels and warned_period_start), a budget remembers which of 80,
90, 95 % and exhausted its current period has told as a budget.warning or budget.exhausted event,
so that each is told once per level and period, whichever request or replica saw it first; the
two event types join the others balance_events may hold.

Forward-only: restore the backup taken before upgrading to go back (docs/operate.md).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STATEMENTS = (
    """ALTER TABLE budgets
    ADD COLUMN warned_levels smallint DEFAULT 0 NOT NULL,
    ADD COLUMN warned_period_start timestamp with time zone""",
    "ALTER TABLE balance_events DROP CONSTRAINT balance_events_type_check",
    """ALTER TABLE balance_events ADD CONSTRAINT balance_events_type_check CHECK (type = ANY (ARRAY[
    'purchase.credited', 'purchase.refused', 'purchase.refusal_resolved', 'credit.reversed', 'dispute.won',
    'allowance.granted', 'allowance.expired', 'plan.changed', 'plan.cancelled', 'balance.warning',
    'balance.adjusted', 'debt.created', 'debt.cleared', 'budget.warning', 'budget.exhausted']))""",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("forward-only: restore the backup taken before the upgrade")
