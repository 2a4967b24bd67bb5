"""Checkout Sessions meter creates (issue 22): what each sold (pack, tokens, price, currency and
the catalog version it was priced under), so that its payment is credited as sold whatever the
catalog says by then, and when each was created and stops taking payment, which is what an
account's limits on open sessions and sessions per hour count. Refused purchases are numbered in
the order they were recorded, newest first being how support lists them.

Revision ID: 0034
Revises: 0033
Create Date: 2026-11-30
"""

from alembic import op

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None

# No reference to accounts: a session may be sold to an account its payment will open.
CHECKOUT_SESSIONS = """CREATE TABLE checkout_sessions (
    account_id text NOT NULL,
    request_id text NOT NULL,
    pack_id text NOT NULL,
    tokens bigint NOT NULL CHECK (tokens > 0),
    price_minor bigint NOT NULL CHECK (price_minor >= 0),
    currency text NOT NULL,
    catalog_version text NOT NULL,
    success_url text NOT NULL,
    cancel_url text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    session_id text,
    url text,
    paid_at timestamptz,
    PRIMARY KEY (account_id, request_id)
)"""

# Stripe's id finds what the session sold when its payment arrives; a session not yet given back
# by Stripe has none.
CHECKOUT_SESSIONS_BY_ID = "CREATE UNIQUE INDEX checkout_sessions_session ON checkout_sessions (account_id, session_id)"

# The sessions that count against an account's limits are its newest.
CHECKOUT_SESSIONS_RECENT = "CREATE INDEX checkout_sessions_recent ON checkout_sessions (account_id, created_at)"

REFUSED_PURCHASES_NUMBERED = "ALTER TABLE refused_purchases ADD COLUMN number bigint GENERATED ALWAYS AS IDENTITY"
REFUSED_PURCHASES_BY_NUMBER = "CREATE UNIQUE INDEX refused_purchases_number ON refused_purchases (number)"


def upgrade() -> None:
    op.execute(CHECKOUT_SESSIONS)
    op.execute(CHECKOUT_SESSIONS_BY_ID)
    op.execute(CHECKOUT_SESSIONS_RECENT)
    op.execute(REFUSED_PURCHASES_NUMBERED)
    op.execute(REFUSED_PURCHASES_BY_NUMBER)


def downgrade() -> None:
    op.execute("ALTER TABLE refused_purchases DROP COLUMN number")
    op.execute("DROP TABLE checkout_sessions")
