"""A pack may expire (issue 37): its catalog entry's expires_after_days, pinned at sale (a Checkout
Session remembers it: checkout_sessions.expires_after_days), makes its purchase a grant of source
'purchase' that expires that many days after it is credited (purchases.grant_id). A refund or
dispute takes back from that grant, and what had expired from it is taken back from nothing
(purchases.cover_claimed; a dispute remembers what it froze from where: frozen_debt,
frozen_cover, for its win).

Forward-only: restore the backup taken before upgrading to go back (docs/operate.md).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

STATEMENTS = (
    """ALTER TABLE checkout_sessions ADD COLUMN expires_after_days integer
    CONSTRAINT checkout_sessions_expires_after_days_check CHECK (expires_after_days BETWEEN 1 AND 3650)""",
    """ALTER TABLE purchases ADD COLUMN grant_id bigint,
    ADD COLUMN cover_claimed bigint DEFAULT 0 NOT NULL CONSTRAINT purchases_cover_claimed_check CHECK (cover_claimed >= 0),
    ADD COLUMN frozen_debt bigint DEFAULT 0 NOT NULL CONSTRAINT purchases_frozen_debt_check CHECK (frozen_debt >= 0),
    ADD COLUMN frozen_cover bigint DEFAULT 0 NOT NULL CONSTRAINT purchases_frozen_cover_check CHECK (frozen_cover >= 0)""",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("forward-only: restore the backup taken before the upgrade")
