"""balance.expiring: a notice before the month's allowance expires with tokens left (issue 37).

An account remembers the allowance month it was told about (expiring_told_period_start), so the
notice is told once per month, by whichever replica's sweeper comes first; a partial index finds
the accounts not told yet whose month ends soon without reading the others. The event type joins
those balance_events may hold.

Forward-only: restore the backup taken before upgrading to go back (docs/operate.md).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

STATEMENTS = (
    "ALTER TABLE accounts ADD COLUMN expiring_told_period_start timestamp with time zone",
    """CREATE INDEX accounts_expiring_untold ON accounts (period_end)
    WHERE expiring_told_period_start IS DISTINCT FROM period_start""",
    "ALTER TABLE balance_events DROP CONSTRAINT balance_events_type_check",
    """ALTER TABLE balance_events ADD CONSTRAINT balance_events_type_check CHECK (type = ANY (ARRAY[
    'purchase.credited', 'purchase.refused', 'purchase.refusal_resolved', 'credit.reversed', 'dispute.won',
    'allowance.granted', 'allowance.expired', 'plan.changed', 'plan.cancelled', 'balance.warning',
    'balance.adjusted', 'debt.created', 'debt.cleared', 'budget.warning', 'budget.exhausted',
    'balance.expiring']))""",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("forward-only: restore the backup taken before the upgrade")
