"""Accounts, sharded balance buckets, holds, the append-only ledger, purchases, adjustments.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE accounts (
    account_id        text PRIMARY KEY,
    plan_id           text NOT NULL,
    monthly_allowance bigint NOT NULL CHECK (monthly_allowance >= 0),
    period_start      timestamptz NOT NULL,
    period_end        timestamptz NOT NULL,
    calendar_periods  boolean NOT NULL,
    allowance_total   bigint NOT NULL CHECK (allowance_total >= 0),
    debt              bigint NOT NULL DEFAULT 0 CHECK (debt >= 0),
    bucket_count      smallint NOT NULL CHECK (bucket_count BETWEEN 1 AND 1024),
    subscription_ref  text,
    plan_event_time   timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    CHECK (period_start < period_end)
);

-- The sweeper finds accounts whose period ended.
CREATE INDEX accounts_period_end ON accounts (period_end);

-- Each pool of an account is split across bucket_count rows so that concurrent holds of one
-- account lock different rows. held = tokens of open holds parked on this bucket.
CREATE TABLE buckets (
    account_id text NOT NULL REFERENCES accounts (account_id),
    pool       text NOT NULL CHECK (pool IN ('allowance', 'purchased')),
    bucket     smallint NOT NULL CHECK (bucket >= 0),
    available  bigint NOT NULL CHECK (available >= 0),
    held       bigint NOT NULL CHECK (held >= 0),
    used       bigint NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (account_id, pool, bucket)
);

CREATE TABLE holds (
    account_id          text NOT NULL REFERENCES accounts (account_id),
    hold_id             uuid NOT NULL,
    request_id          text NOT NULL,
    model               text NOT NULL,
    input_tokens        bigint NOT NULL CHECK (input_tokens >= 0),
    max_output_tokens   bigint NOT NULL CHECK (max_output_tokens >= 0),
    ttl_seconds         integer NOT NULL CHECK (ttl_seconds > 0),
    labels              jsonb NOT NULL,
    catalog_version     text NOT NULL,
    input_weight        bigint NOT NULL,
    output_weight       bigint NOT NULL,
    input_price         bigint NOT NULL,
    output_price        bigint NOT NULL,
    allowance_held      bigint NOT NULL CHECK (allowance_held >= 0),
    allowance_bucket    smallint NOT NULL,
    purchased_held      bigint NOT NULL CHECK (purchased_held >= 0),
    purchased_bucket    smallint NOT NULL,
    period_start        timestamptz NOT NULL,
    status              text NOT NULL CHECK (status IN ('open', 'committed', 'released', 'expired')),
    created_at          timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    settled_at          timestamptz,
    usage_input_tokens  bigint,
    usage_output_tokens bigint,
    charged_tokens      bigint,
    cost_micros         bigint,
    unbilled_tokens     bigint,
    late                boolean,
    PRIMARY KEY (account_id, hold_id),
    UNIQUE (account_id, request_id),
    CHECK ((status = 'committed') = (charged_tokens IS NOT NULL))
);

-- The sweeper finds open holds past their expiry.
CREATE INDEX holds_open_expires_at ON holds (expires_at) WHERE status = 'open';

CREATE TABLE ledger_entries (
    account_id     text NOT NULL REFERENCES accounts (account_id),
    entry_id       bigint GENERATED ALWAYS AS IDENTITY,
    created_at     timestamptz NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('subscription_grant', 'expiry', 'usage', 'purchase',
                                                 'adjustment', 'debt_payment')),
    pool           text NOT NULL CHECK (pool IN ('allowance', 'purchased', 'debt')),
    amount         bigint NOT NULL CHECK (amount <> 0),
    reservation_id text,
    ref            text,
    note           text,
    PRIMARY KEY (account_id, entry_id)
);

-- The ledger is append-only: history is corrected by new entries, never rewritten.
CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only (% refused)', TG_OP;
END;
$$;

CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();

CREATE TABLE purchases (
    account_id     text NOT NULL REFERENCES accounts (account_id),
    payment_ref    text NOT NULL,
    pack_id        text NOT NULL,
    tokens         bigint NOT NULL CHECK (tokens > 0),
    amount_minor   bigint NOT NULL CHECK (amount_minor >= 0),
    currency       text NOT NULL,
    payment_intent text,
    event_id       text,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (account_id, payment_ref)
);

CREATE TABLE adjustments (
    account_id text NOT NULL REFERENCES accounts (account_id),
    request_id text NOT NULL,
    pool       text NOT NULL CHECK (pool IN ('allowance', 'purchased')),
    delta      bigint NOT NULL CHECK (delta <> 0),
    reason     text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (account_id, request_id)
);
"""

DOWNGRADE = """
DROP TABLE adjustments;
DROP TABLE purchases;
DROP TABLE ledger_entries;
DROP FUNCTION ledger_entries_append_only();
DROP TABLE holds;
DROP TABLE buckets;
DROP TABLE accounts;
"""


def _statements(script: str) -> list[str]:
    """Statements are separated by blank lines (asyncpg prepares one statement at a time)."""
    return [block.strip() for block in script.split("\n\n") if block.strip()]


def upgrade() -> None:
    for statement in _statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE.strip().splitlines():
        op.execute(statement)
