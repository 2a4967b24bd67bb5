"""A plan may keep a past-due subscription's allowance for a grace period (issue 38): while
Stripe retries a failed renewal, the months that begin before accounts.grace_until are granted as
if paid (meter_begin_month); Python sets it from the plan's past_due_grace_days when the
subscription becomes past_due, and clears it when it is not any more.

Forward-only: restore the backup taken before upgrading to go back (docs/operate.md).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

STATEMENTS = ("ALTER TABLE accounts ADD COLUMN grace_until timestamp with time zone",)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("forward-only: restore the backup taken before the upgrade")
