"""What a month was withheld, and the anchor a payment's months are counted from (issue 35).

A month some of whose grant a refund or dispute withheld before it began remembers how much
(accounts.allowance_withheld, set by meter_begin_period): an upgrade within it grants the new
plan's allowance less that, as the month's grant was the old plan's less that.

A subscription payment remembers the anchor its months were counted from when it was paid
(subscription_payments.month_anchor): a refund counts the months it has not begun, and a month
its part of what was withheld, from the same instants (a year renewed from a 29 February anchor
starts on the 28th, but its months are still the 29th's). Payments recorded before count from the
account's anchor, which is what they were counted from.

Forward-only: restore the backup taken before upgrading to go back (docs/operate.md).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STATEMENTS = (
    """ALTER TABLE accounts
    ADD COLUMN allowance_withheld bigint DEFAULT 0 NOT NULL CHECK (allowance_withheld >= 0)""",
    "ALTER TABLE subscription_payments ADD COLUMN month_anchor timestamp with time zone",
    """UPDATE subscription_payments AS s SET month_anchor = coalesce(a.month_anchor, s.period_start)
    FROM accounts AS a WHERE a.account_id = s.account_id AND s.months > 0""",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("forward-only: restore the backup taken before the upgrade")
