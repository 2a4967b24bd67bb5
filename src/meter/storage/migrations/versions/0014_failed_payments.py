"""Payments that fail (issue 38): an account remembers its subscription's status as Stripe last
said it (accounts.subscription_status), so that a change to or from past_due or unpaid is told
(subscription.status_changed); a subscription invoice whose payment failed is told as
subscription.payment_failed (one of a subscription not linked yet waits for it, as its invoices do).

Forward-only: restore the backup taken before upgrading to go back (docs/operate.md).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

STATEMENTS = (
    """ALTER TABLE accounts ADD COLUMN subscription_status text
    CONSTRAINT accounts_subscription_status_check CHECK (length(subscription_status) <= 64)""",
    "ALTER TABLE waiting_requests DROP CONSTRAINT waiting_requests_kind_check",
    """ALTER TABLE waiting_requests ADD CONSTRAINT waiting_requests_kind_check
    CHECK (kind = ANY (ARRAY['reversal', 'invoice', 'payment_link', 'payment_failure']))""",
    "ALTER TABLE balance_events DROP CONSTRAINT balance_events_type_check",
    """ALTER TABLE balance_events ADD CONSTRAINT balance_events_type_check CHECK (type = ANY (ARRAY[
    'purchase.credited', 'purchase.refused', 'purchase.refusal_resolved', 'purchase.refusal_settled',
    'credit.reversed', 'dispute.won', 'allowance.granted', 'allowance.expired', 'plan.changed', 'plan.cancelled',
    'subscription.payment_failed', 'subscription.status_changed',
    'balance.warning', 'balance.adjusted', 'debt.created', 'debt.cleared', 'budget.warning', 'budget.exhausted',
    'balance.expiring', 'grant.created', 'grant.expired', 'grant.revoked']))""",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("forward-only: restore the backup taken before the upgrade")
