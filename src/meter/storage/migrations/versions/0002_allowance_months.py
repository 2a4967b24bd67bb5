"""The allowance is monthly, whatever the billing interval (issue 35).

An account's period (period_start, period_end) is now its allowance month: when what is left of
the allowance expires and the next month's is granted. Months are counted from month_anchor (the
subscription's billing anchor, or the period SetPlan gave), or are calendar months (UTC) when it
is NULL; calendar_periods, which said the same, goes. The billing period a subscription is in
(billing_period_start/end, as Stripe last said) and the end of the latest one an invoice paid for
(paid_through) are kept apart from it: a subscriber's month is granted while it begins before
paid_through, so a yearly invoice pays for twelve months and a monthly one for one. A cancelled
subscription whose allowance lasts its paid months gets, after paid_through, the allowance it was
given for then (allowance_after_paid: the default plan's).

A subscription payment knows how many allowance months it pays for (months) and what refunds or
disputes took back from those not yet begun
(withheld_tokens, of which frozen_withheld by an open or lost dispute): taken from its last months
first, as if the paid year were shorter. A freeze also remembers what it claimed of what ended
months left unused (frozen_cover), as it did what became debt (frozen_debt), for a won dispute.

Existing accounts: a billing period of whole months longer than one (a yearly plan) becomes
months from its start, and the account moves into the month containing now, keeping what it has
(its allowance was granted for the whole period once; nothing is granted or expired here).

Forward-only: restore the backup taken before upgrading to go back (docs/operate.md).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STATEMENTS = (
    """ALTER TABLE accounts
    ADD COLUMN month_anchor timestamp with time zone,
    ADD COLUMN billing_period_start timestamp with time zone,
    ADD COLUMN billing_period_end timestamp with time zone,
    ADD COLUMN paid_through timestamp with time zone,
    ADD COLUMN allowance_after_paid bigint CHECK (allowance_after_paid >= 0),
    ADD CONSTRAINT accounts_billing_period_check CHECK (billing_period_start < billing_period_end)""",
    # Accounts on a billing period: it is their billing period and its start their months' anchor;
    # a subscriber whose period was granted has paid through its end.
    """UPDATE accounts SET month_anchor = period_start, billing_period_start = period_start,
    billing_period_end = period_end,
    paid_through = CASE WHEN subscription_ref IS NOT NULL AND granted_period_start = period_start
        THEN period_end END
    WHERE NOT calendar_periods""",
    # Into the allowance month containing now, counted from the anchor, when the period is longer
    # than a month: the months already past in it are not granted again.
    """UPDATE accounts AS a SET period_start = m.month_start, period_end = m.month_end,
    granted_period_start = CASE WHEN a.granted_period_start = a.period_start THEN m.month_start
        ELSE a.granted_period_start END,
    warned_period_start = CASE WHEN a.warned_period_start = a.period_start THEN m.month_start
        ELSE a.warned_period_start END
    FROM (
        SELECT x.account_id,
            (x.anchor + make_interval(months => x.k)) AT TIME ZONE 'UTC' AS month_start,
            (x.anchor + make_interval(months => x.k + 1)) AT TIME ZONE 'UTC' AS month_end
        FROM (
            SELECT account_id, month_anchor AT TIME ZONE 'UTC' AS anchor,
                greatest(0, (SELECT max(n) FROM generate_series(0, 12) AS n
                    WHERE (month_anchor AT TIME ZONE 'UTC' + make_interval(months => n)) AT TIME ZONE 'UTC'
                        <= least(now(), period_end - interval '1 microsecond'))) AS k
            FROM accounts WHERE month_anchor IS NOT NULL
                AND (month_anchor AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC' < period_end
        ) AS x
    ) AS m
    WHERE a.account_id = m.account_id""",
    """UPDATE holds AS h SET period_start = a.period_start FROM accounts AS a
    WHERE h.account_id = a.account_id AND h.status = 'open' AND h.period_start = a.month_anchor
        AND a.period_start <> a.month_anchor""",
    """UPDATE budgets AS g SET period_start = a.period_start FROM accounts AS a
    WHERE g.account_id = a.account_id AND g.period_start = a.month_anchor AND a.period_start <> a.month_anchor""",
    """UPDATE budget_buckets AS b SET period_start = a.period_start FROM accounts AS a
    WHERE b.account_id = a.account_id AND b.period_start = a.month_anchor AND a.period_start <> a.month_anchor""",
    "ALTER TABLE accounts DROP COLUMN calendar_periods",
    # A month is granted once (meter_begin_period looks for its grant): its grants, found fast.
    """CREATE INDEX ledger_entries_month_grants ON ledger_entries (account_id, ref)
    WHERE kind = 'subscription_grant'""",
    """ALTER TABLE subscription_payments
    ADD COLUMN months integer DEFAULT 1 NOT NULL CHECK (months >= 0),
    ADD COLUMN withheld_tokens bigint DEFAULT 0 NOT NULL CHECK (withheld_tokens >= 0),
    ADD COLUMN frozen_withheld bigint DEFAULT 0 NOT NULL CHECK (frozen_withheld >= 0),
    ADD COLUMN frozen_cover bigint DEFAULT 0 NOT NULL CHECK (frozen_cover >= 0),
    ADD CONSTRAINT subscription_payments_withheld_check CHECK (frozen_withheld <= withheld_tokens)""",
    # A payment recorded before paid for one grant: its period's.
    """UPDATE subscription_payments AS s SET months = CASE WHEN s.proration THEN 0 ELSE 1 END""",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("forward-only: restore the backup taken before the upgrade")
