"""Upgrades from the baseline stay tested: a database the baseline migration made, with accounts
in it, is upgraded to this code's head and keeps what it had, each later migration's data step
included (0002: an account on a yearly billing period moves into its current allowance month,
its billing period and paid-through date kept apart, and its invoice pays for one month; a
calendar account is left as it was; 0003: that invoice's months are counted from its account's
anchor, and no month has anything withheld)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from meter.domain.periods import add_months, calendar_month
from meter.storage.migrate import upgrade

_ACCOUNT = """
INSERT INTO accounts (account_id, plan_id, monthly_allowance, period_start, period_end, calendar_periods,
    allowance_total, debt, bucket_count, subscription_ref, granted_period_start, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $3, 0, 1, $7, $4, now(), now())
"""
_PAYMENT = """
INSERT INTO subscription_payments (account_id, invoice_ref, subscription_ref, period_start, period_end, proration,
    amount_minor, currency, tokens, created_at)
VALUES ($1, $2, $3, $4, $5, false, 120000, 'usd', 500000, now())
"""
_BUCKETS = """
INSERT INTO buckets (account_id, pool, bucket, available, held, used)
VALUES ($1, 'allowance', 0, $2, 0, 0), ($1, 'purchased', 0, 0, 0, 0)
"""


async def test_a_baseline_database_upgrades_into_allowance_months(empty_database: str) -> None:
    scratch_url = empty_database
    await asyncio.to_thread(upgrade, scratch_url, "0001")
    connection = await asyncpg.connect(scratch_url)
    try:
        now: datetime = (await connection.fetchval("SELECT now()")).astimezone(UTC)
        year_start = (now - timedelta(days=100)).replace(microsecond=0)
        month_start = (now - timedelta(days=10)).replace(microsecond=0)
        calendar = calendar_month(now)
        accounts = {
            "yearly": ("pro", 500_000, year_start, add_months(year_start, 12), False, "sub_yearly"),
            "monthly": ("pro", 500_000, month_start, add_months(month_start, 1), False, "sub_monthly"),
            "calendar": ("starter", 50_000, calendar.start, calendar.end, True, None),
        }
        for account, (plan, allowance, start, end, on_calendar, subscription) in accounts.items():
            await connection.execute(_ACCOUNT, account, plan, allowance, start, end, on_calendar, subscription)
            await connection.execute(_BUCKETS, account, allowance - 1000)
        await connection.execute(_PAYMENT, "yearly", "in_yearly", "sub_yearly", year_start, add_months(year_start, 12))
    finally:
        await connection.close()

    await asyncio.to_thread(upgrade, scratch_url)

    connection = await asyncpg.connect(scratch_url)
    try:
        rows = {
            row["account_id"]: row
            for row in await connection.fetch(
                "SELECT account_id, period_start, period_end, month_anchor, billing_period_start, billing_period_end, "
                "paid_through, granted_period_start, allowance_total, allowance_withheld FROM accounts"
            )
        }
        payment = await connection.fetchrow("SELECT months, month_anchor FROM subscription_payments")
        available = await connection.fetchval("SELECT sum(available) FROM buckets WHERE account_id = 'yearly'")
    finally:
        await connection.close()
    months = next(k for k in range(12) if add_months(year_start, k + 1) > now)
    yearly = rows["yearly"]
    assert (yearly["period_start"], yearly["period_end"]) == (
        add_months(year_start, months),
        add_months(year_start, months + 1),
    )
    assert months >= 3 and yearly["month_anchor"] == year_start
    assert (yearly["billing_period_start"], yearly["billing_period_end"]) == (year_start, add_months(year_start, 12))
    assert yearly["paid_through"] == add_months(year_start, 12)
    assert yearly["granted_period_start"] == yearly["period_start"]  # what it has is this month's: kept
    assert (yearly["allowance_total"], available, yearly["allowance_withheld"]) == (500_000, 499_000, 0)
    assert (payment["months"], payment["month_anchor"]) == (1, year_start)
    monthly = rows["monthly"]
    assert (monthly["period_start"], monthly["period_end"]) == (month_start, add_months(month_start, 1))
    assert (monthly["month_anchor"], monthly["paid_through"]) == (month_start, add_months(month_start, 1))
    on_calendar = rows["calendar"]
    assert (on_calendar["period_start"], on_calendar["period_end"]) == (calendar.start, calendar.end)
    assert on_calendar["month_anchor"] is None and on_calendar["paid_through"] is None
