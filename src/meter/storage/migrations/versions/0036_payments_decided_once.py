"""One decision per Stripe payment for a pack (issue 34): credited to one account, or refused
(told on one), whatever account its events name. Purchases were keyed by (account, payment), so
two correctly signed events naming two accounts credited one payment twice; and a refusal stayed
listed for refund after the payment was credited. `pack_payments` is keyed by the payment alone
(the one payment table not keyed by account: a payment is not an account's until it is decided),
and both the credit and the refusal of a payment lock its row first. A session meter sold is found
by its Stripe id alone, so that its account is the one it was sold to.

Rows already there are decided as they stand: the first credit of each payment (a payment already
credited twice stays so, and `meter audit` reports it), else its first refusal.

A refused payment credited after all is told as 'purchase.refusal_resolved' on the account its
refusal was told on. The downgrade drops the table, the index and those events.

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-07
"""

from alembic import op

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None

PACK_PAYMENTS = """CREATE TABLE pack_payments (
    payment_ref text PRIMARY KEY,
    account_id text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('credited', 'refused')),
    decided_at timestamptz NOT NULL
)"""

CREDITED_BEFORE = """INSERT INTO pack_payments (payment_ref, account_id, outcome, decided_at)
SELECT DISTINCT ON (payment_ref) payment_ref, account_id, 'credited', created_at FROM purchases
ORDER BY payment_ref, created_at, account_id"""

REFUSED_BEFORE = """INSERT INTO pack_payments (payment_ref, account_id, outcome, decided_at)
SELECT DISTINCT ON (payment_ref) payment_ref, account_id, 'refused', refused_at FROM refused_purchases
ORDER BY payment_ref, refused_at, account_id
ON CONFLICT (payment_ref) DO NOTHING"""

EVENT_TYPES = "'purchase.credited', 'purchase.refused', 'purchase.refusal_resolved', 'credit.reversed', 'dispute.won', 'allowance.granted', 'allowance.expired', 'plan.changed', 'plan.cancelled', 'balance.warning', 'balance.adjusted', 'debt.created', 'debt.cleared'"
EVENT_TYPES_0035 = "'purchase.credited', 'purchase.refused', 'credit.reversed', 'dispute.won', 'allowance.granted', 'allowance.expired', 'plan.changed', 'plan.cancelled', 'balance.warning', 'balance.adjusted', 'debt.created', 'debt.cleared'"

# A payment's session is looked up by Stripe's id alone (the account its event names may be wrong).
CHECKOUT_SESSIONS_BY_SESSION = "CREATE INDEX checkout_sessions_by_session ON checkout_sessions (session_id)"


def upgrade() -> None:
    op.execute(PACK_PAYMENTS)
    op.execute(CREDITED_BEFORE)
    op.execute(REFUSED_BEFORE)
    op.execute(CHECKOUT_SESSIONS_BY_SESSION)
    _event_types(EVENT_TYPES)


def downgrade() -> None:
    op.execute("DELETE FROM balance_events WHERE type = 'purchase.refusal_resolved'")
    _event_types(EVENT_TYPES_0035)
    op.execute("DROP INDEX checkout_sessions_by_session")
    op.execute("DROP TABLE pack_payments")


def _event_types(types: str) -> None:
    op.execute("ALTER TABLE balance_events DROP CONSTRAINT balance_events_type_check")
    op.execute(f"ALTER TABLE balance_events ADD CONSTRAINT balance_events_type_check CHECK (type IN ({types}))")
