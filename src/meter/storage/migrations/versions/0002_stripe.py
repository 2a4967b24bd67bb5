"""Stripe money flow: stored webhook events, reversals on purchases, subscription grants.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
-- The period whose allowance was granted: a subscription's next allowance waits for its invoice.
ALTER TABLE accounts ADD COLUMN granted_period_start timestamptz;

UPDATE accounts SET granted_period_start = period_start;

-- An invoice finds its account through its subscription (a read before the account's transaction).
CREATE INDEX accounts_subscription_ref ON accounts (subscription_ref) WHERE subscription_ref IS NOT NULL;

ALTER TABLE purchases
    ADD COLUMN refunded_minor bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    ADD COLUMN refund_reversed_tokens bigint NOT NULL DEFAULT 0 CHECK (refund_reversed_tokens >= 0),
    ADD COLUMN frozen_tokens bigint NOT NULL DEFAULT 0 CHECK (frozen_tokens >= 0),
    ADD CHECK (refund_reversed_tokens + frozen_tokens <= tokens);

-- Refunds and disputes find their purchase by PaymentIntent.
CREATE INDEX purchases_payment_intent ON purchases (payment_intent) WHERE payment_intent IS NOT NULL;

ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;

ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check CHECK (kind IN (
    'subscription_grant', 'expiry', 'usage', 'purchase', 'adjustment', 'debt_payment',
    'refund', 'dispute_freeze', 'dispute_release'));

-- Every verified Stripe event, stored in the same transaction as its effect. account_id is ''
-- for events that concern no account.
CREATE TABLE webhook_events (
    account_id  text NOT NULL,
    event_id    text NOT NULL,
    type        text NOT NULL,
    status      text NOT NULL CHECK (status IN ('applied', 'ignored', 'rejected')),
    reason      text,
    payload     bytea NOT NULL,
    received_at timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (account_id, event_id)
);

CREATE INDEX webhook_events_event_id ON webhook_events (event_id);
"""

DOWNGRADE = """
DROP TABLE webhook_events;

ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;

ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check CHECK (kind IN (
    'subscription_grant', 'expiry', 'usage', 'purchase', 'adjustment', 'debt_payment'));

DROP INDEX purchases_payment_intent;

ALTER TABLE purchases DROP COLUMN refunded_minor, DROP COLUMN refund_reversed_tokens, DROP COLUMN frozen_tokens;

DROP INDEX accounts_subscription_ref;

ALTER TABLE accounts DROP COLUMN granted_period_start;
"""


def _statements(script: str) -> list[str]:
    """Statements are separated by blank lines (asyncpg prepares one statement at a time)."""
    return [block.strip() for block in script.split("\n\n") if block.strip()]


def upgrade() -> None:
    for statement in _statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(DOWNGRADE):
        op.execute(statement)
