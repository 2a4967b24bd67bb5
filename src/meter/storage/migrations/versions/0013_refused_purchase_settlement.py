"""A refused purchase can be settled (issue 38): support refunds it through meter
(RefundRefusedPurchase asks Stripe) or marks it resolved with a note (ResolveRefusedPurchase), and
the refund's webhook closes it instead of waiting for a purchase that will never be credited. Each
refused purchase keeps its state, what was refunded of it, the refund, the note, and when and by
whom it was settled; a settled one is never credited later. purchase.refusal_settled tells it.

Forward-only: restore the backup taken before upgrading to go back (docs/operate.md).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

STATEMENTS = (
    """ALTER TABLE refused_purchases
    ADD COLUMN state text DEFAULT 'open' NOT NULL CONSTRAINT refused_purchases_state_check
        CHECK (state = ANY (ARRAY['open', 'refund_requested', 'refunded', 'resolved'])),
    ADD COLUMN refunded_minor bigint DEFAULT 0 NOT NULL CONSTRAINT refused_purchases_refunded_minor_check
        CHECK (refunded_minor >= 0),
    ADD COLUMN refund_ref text,
    ADD COLUMN note text,
    ADD COLUMN settled_at timestamp with time zone,
    ADD COLUMN settled_by text""",
    "CREATE INDEX refused_purchases_payment_intent ON refused_purchases (payment_intent) WHERE payment_intent IS NOT NULL",
    "ALTER TABLE balance_events DROP CONSTRAINT balance_events_type_check",
    """ALTER TABLE balance_events ADD CONSTRAINT balance_events_type_check CHECK (type = ANY (ARRAY[
    'purchase.credited', 'purchase.refused', 'purchase.refusal_resolved', 'purchase.refusal_settled',
    'credit.reversed', 'dispute.won', 'allowance.granted', 'allowance.expired', 'plan.changed', 'plan.cancelled',
    'balance.warning', 'balance.adjusted', 'debt.created', 'debt.cleared', 'budget.warning', 'budget.exhausted',
    'balance.expiring', 'grant.created', 'grant.expired', 'grant.revoked']))""",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("forward-only: restore the backup taken before the upgrade")
