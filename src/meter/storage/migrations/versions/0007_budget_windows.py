"""A budget may have its own window (issue 37): the account's allowance month as before, or a UTC
day, week or calendar month (budgets.budget_window, meter_budget_period). A hold remembers the
period each of its budget parts counts (holds.budget_periods), since a call's budgets may count
different periods; the holds of before counted their account's month, as their period_start says.

Forward-only: restore the backup taken before upgrading to go back (docs/operate.md).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STATEMENTS = (
    """ALTER TABLE budgets ADD COLUMN budget_window text DEFAULT 'account_month' NOT NULL
    CONSTRAINT budgets_budget_window_check
    CHECK (budget_window = ANY (ARRAY['account_month', 'day', 'week', 'calendar_month']))""",
    "ALTER TABLE holds ADD COLUMN budget_periods timestamp with time zone[]",
    """UPDATE holds SET budget_periods = array_fill(period_start, ARRAY[cardinality(budget_ids)])
    WHERE budget_ids IS NOT NULL""",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("forward-only: restore the backup taken before the upgrade")
