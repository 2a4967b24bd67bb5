"""A dispute's freeze remembers what it took from the grants an invoice's months became (rolled
over at a month's end, or converted at a cancellation), so that a won dispute gives those tokens
back to the grants they came from while they live, instead of to a month that ends sooner.

Forward-only: restore the backup taken before upgrading to go back (docs/operate.md).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

STATEMENTS = (
    """ALTER TABLE subscription_payments ADD COLUMN frozen_granted bigint NOT NULL DEFAULT 0
    CONSTRAINT subscription_payments_frozen_granted_check CHECK (frozen_granted >= 0)""",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("forward-only: restore the backup taken before the upgrade")
