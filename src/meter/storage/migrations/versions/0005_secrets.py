"""meter_secrets: keys every replica must share, kept where the state is (PostgreSQL), created
once with PostgreSQL's strong random generator. First: the key that signs ledger page tokens.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
CREATE TABLE meter_secrets (
    name  text PRIMARY KEY,
    value bytea NOT NULL CHECK (length(value) >= 32)
)"""
    )
    op.execute(
        """
INSERT INTO meter_secrets (name, value) VALUES ('page_token_key', decode(
    replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', ''), 'hex'))"""
    )


def downgrade() -> None:
    op.execute("DROP TABLE meter_secrets")
