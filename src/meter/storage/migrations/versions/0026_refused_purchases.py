"""Refused purchases: a payment Stripe took that meter would not credit (its pack is not sold, or
its tokens, price or currency differ from the catalog's), kept once per payment so that support
can refund it, and told once as a 'purchase.refused' balance event.

Revision ID: 0026
Revises: 0025
Create Date: 2026-11-29
"""

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

EVENT_TYPES = "'purchase.credited', 'purchase.refused', 'credit.reversed', 'dispute.won', 'allowance.granted', 'allowance.expired', 'plan.changed', 'plan.cancelled', 'balance.warning', 'balance.adjusted', 'debt.created', 'debt.cleared'"
EVENT_TYPES_0024 = "'purchase.credited', 'credit.reversed', 'dispute.won', 'allowance.granted', 'allowance.expired', 'plan.changed', 'plan.cancelled', 'balance.warning', 'balance.adjusted', 'debt.created', 'debt.cleared'"

REFUSED_PURCHASES = """CREATE TABLE refused_purchases (
    account_id text NOT NULL REFERENCES accounts (account_id),
    payment_ref text NOT NULL,
    pack_id text NOT NULL,
    tokens bigint NOT NULL,
    amount_minor bigint NOT NULL,
    currency text NOT NULL,
    payment_intent text,
    event_id text,
    reason text NOT NULL,
    message text NOT NULL,
    refused_at timestamptz NOT NULL,
    PRIMARY KEY (account_id, payment_ref)
)"""


def upgrade() -> None:
    op.execute(REFUSED_PURCHASES)
    op.execute("ALTER TABLE balance_events DROP CONSTRAINT balance_events_type_check")
    op.execute(f"ALTER TABLE balance_events ADD CONSTRAINT balance_events_type_check CHECK (type IN ({EVENT_TYPES}))")


def downgrade() -> None:
    op.execute("DELETE FROM balance_events WHERE type = 'purchase.refused'")
    op.execute("ALTER TABLE balance_events DROP CONSTRAINT balance_events_type_check")
    op.execute(
        f"ALTER TABLE balance_events ADD CONSTRAINT balance_events_type_check CHECK (type IN ({EVENT_TYPES_0024}))"
    )
    op.execute("DROP TABLE refused_purchases")
