"""Subscription payments, dispute states, and requests waiting for what they refer to.

subscription_payments: each paid subscription invoice meter recorded, with what the payment bought
(`tokens`: the allowance it granted, or for an invoice of prorations the allowance its upgrade
added) and the same reversal state as a pack purchase, so a refund or dispute of it takes the
allowance back. Its period's allowance left unused when the period ended (`unused_at_end`, written
at the boundary) is what a reversal after the end can take back without making debt;
`cover_claimed` is how much of it this payment's reversals used. `frozen_debt`: the part of the
frozen tokens that became debt rather than leaving a pool.

purchases.dispute_status and subscription_payments.dispute_status: the payment's dispute as the
events so far say (open, won, lost). Won and lost are final: a `created` delivered after `closed`
changes nothing.

waiting_requests: a request from a verified Stripe event that refers to what meter has not seen
yet (a refund of a payment not yet credited, an invoice of a subscription not yet linked, the
payment of an invoice not yet recorded), kept until it arrives and applied in that transaction.
`waits_for` names it: `payment_intent:pi_…`, `invoice:in_…` or `subscription:sub_…`. The event
itself is stored as `pending` meanwhile.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE purchases ADD COLUMN dispute_status text CHECK (dispute_status IN ('open', 'won', 'lost'));

CREATE TABLE subscription_payments (
    account_id             text NOT NULL REFERENCES accounts (account_id),
    invoice_ref            text NOT NULL,
    subscription_ref       text NOT NULL,
    period_start           timestamptz NOT NULL,
    period_end             timestamptz NOT NULL,
    proration              boolean NOT NULL,
    amount_minor           bigint NOT NULL CHECK (amount_minor >= 0),
    currency               text NOT NULL,
    tokens                 bigint NOT NULL CHECK (tokens >= 0),
    payment_intent         text,
    refunded_minor         bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    refund_reversed_tokens bigint NOT NULL DEFAULT 0 CHECK (refund_reversed_tokens >= 0),
    frozen_tokens          bigint NOT NULL DEFAULT 0 CHECK (frozen_tokens >= 0),
    frozen_debt            bigint NOT NULL DEFAULT 0 CHECK (frozen_debt >= 0 AND frozen_debt <= frozen_tokens),
    dispute_status         text CHECK (dispute_status IN ('open', 'won', 'lost')),
    unused_at_end          bigint CHECK (unused_at_end >= 0),
    cover_claimed          bigint NOT NULL DEFAULT 0,
    created_at             timestamptz NOT NULL,
    PRIMARY KEY (account_id, invoice_ref),
    CHECK (refund_reversed_tokens + frozen_tokens <= tokens)
);

-- A payment link (invoice_payment.paid) names only the invoice; a refund only the PaymentIntent.
CREATE INDEX subscription_payments_invoice ON subscription_payments (invoice_ref);

CREATE INDEX subscription_payments_intent ON subscription_payments (payment_intent)
    WHERE payment_intent IS NOT NULL;

CREATE TABLE waiting_requests (
    waits_for   text NOT NULL,
    event_id    text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('reversal', 'invoice', 'payment_link')),
    request     jsonb NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (waits_for, event_id)
);

ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_status_check;

ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_status_check
    CHECK (status IN ('applied', 'ignored', 'rejected', 'pending'));
"""

DOWNGRADE = """
ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_status_check;

DELETE FROM webhook_events WHERE status = 'pending';

ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_status_check
    CHECK (status IN ('applied', 'ignored', 'rejected'));

DROP TABLE waiting_requests;

DROP TABLE subscription_payments;

ALTER TABLE purchases DROP COLUMN dispute_status;
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
