"""Credit grants (issue 37): a balance is a set of grants drawn in one order. Besides the two pools
every account has (the month's allowance, which expires at the month's end, and purchased tokens,
which never expire), an account may hold grants of their own: promotional or goodwill tokens,
each with a priority and an optional expiry (grants). A grant's tokens sit on bucket rows of their
own, named 'grant:<id>', which carry the order they are drawn in (buckets.priority, expires_at,
draw_seq: the allowance's expiry is its month's end) and what kind of tokens they are
(buckets.source). The ledger names a grant's entries by that pool; a grant granted, revoked and
expired are kinds and events of their own. accounts.next_grant_expiry says when the next of an
account's grants expires, so that a call finds an expired one without looking (as period_end does
for the month); grants.expiring_told, whether balance.expiring told a grant's coming expiry.

Forward-only: restore the backup taken before upgrading to go back (docs/operate.md).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

POOL = "(pool = ANY (ARRAY['allowance', 'purchased']) OR pool ~ '^grant:[0-9]+$')"

STATEMENTS = (
    """CREATE TABLE grants (
    account_id text NOT NULL REFERENCES accounts (account_id),
    grant_id bigint GENERATED ALWAYS AS IDENTITY,
    request_id text NOT NULL,
    source text NOT NULL CHECK (source = ANY (ARRAY['purchase', 'promotion', 'rollover', 'adjustment'])),
    tokens bigint NOT NULL CHECK (tokens > 0),
    priority integer NOT NULL CHECK (priority BETWEEN 0 AND 1000000),
    expires_at timestamp with time zone,
    reason text NOT NULL,
    caller text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    ended_at timestamp with time zone,
    ended_how text CHECK (ended_how = ANY (ARRAY['expired', 'revoked'])),
    ended_tokens bigint,
    expiring_told boolean DEFAULT false NOT NULL,
    CONSTRAINT grants_pkey PRIMARY KEY (account_id, grant_id),
    CONSTRAINT grants_account_id_request_id_key UNIQUE (account_id, request_id),
    CONSTRAINT grants_ended_check CHECK ((ended_at IS NULL) = (ended_how IS NULL))
    )""",
    "CREATE INDEX grants_live_expiry ON grants (account_id, expires_at) WHERE ended_at IS NULL",
    "CREATE INDEX grants_expiring_untold ON grants (expires_at) WHERE ended_at IS NULL AND NOT expiring_told",
    """ALTER TABLE buckets
    ADD COLUMN source text DEFAULT 'purchase' NOT NULL
        CONSTRAINT buckets_source_check
        CHECK (source = ANY (ARRAY['allowance', 'purchase', 'promotion', 'rollover', 'adjustment'])),
    ADD COLUMN priority integer DEFAULT 0 NOT NULL,
    ADD COLUMN expires_at timestamp with time zone,
    ADD COLUMN draw_seq bigint DEFAULT 0 NOT NULL,
    DROP CONSTRAINT buckets_pool_check""",
    f"ALTER TABLE buckets ADD CONSTRAINT buckets_pool_check CHECK {POOL}",
    """UPDATE buckets AS b SET source = 'allowance', expires_at = a.period_end FROM accounts AS a
    WHERE a.account_id = b.account_id AND b.pool = 'allowance'""",
    "ALTER TABLE usage_daily DROP CONSTRAINT usage_daily_pool_check",
    f"ALTER TABLE usage_daily ADD CONSTRAINT usage_daily_pool_check CHECK {POOL}",
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_pool_check",
    f"ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_pool_check CHECK ({POOL} OR pool = 'debt')",
    "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check",
    """ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check CHECK (kind = ANY (ARRAY[
    'subscription_grant', 'expiry', 'usage', 'purchase', 'adjustment', 'debt_payment', 'refund', 'dispute_freeze',
    'dispute_release', 'grant', 'revocation']))""",
    "ALTER TABLE accounts ADD COLUMN next_grant_expiry timestamp with time zone",
    "CREATE INDEX accounts_next_grant_expiry ON accounts (next_grant_expiry) WHERE next_grant_expiry IS NOT NULL",
    "ALTER TYPE meter_balance_row ADD ATTRIBUTE granted_remaining bigint, ADD ATTRIBUTE granted_held bigint",
    "ALTER TABLE balance_events DROP CONSTRAINT balance_events_type_check",
    """ALTER TABLE balance_events ADD CONSTRAINT balance_events_type_check CHECK (type = ANY (ARRAY[
    'purchase.credited', 'purchase.refused', 'purchase.refusal_resolved', 'credit.reversed', 'dispute.won',
    'allowance.granted', 'allowance.expired', 'plan.changed', 'plan.cancelled', 'balance.warning',
    'balance.adjusted', 'debt.created', 'debt.cleared', 'budget.warning', 'budget.exhausted', 'balance.expiring',
    'grant.created', 'grant.expired', 'grant.revoked']))""",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("forward-only: restore the backup taken before the upgrade")
