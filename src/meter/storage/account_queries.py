"""Queries on accounts (plan, period, debt)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meter.domain.accounts import Account
from meter.domain.holds import ExpiredHolds
from meter.domain.limits import RateLimits
from meter.domain.periods import Period
from meter.storage.queries import NOW, Queries

ACCOUNT_COLUMNS = """a.account_id, a.plan_id, a.monthly_allowance, a.period_start, a.period_end,
    a.calendar_periods, a.allowance_total, a.debt, a.bucket_count, a.subscription_ref,
    a.plan_event_time, a.granted_period_start, a.requests_per_minute, a.tokens_per_minute, a.concurrent_holds,
    a.expired_holds"""


class AccountQueries(Queries):
    async def account_state(self, account_id: str) -> tuple[Account | None, datetime]:
        """The account (unlocked) and the clock's now, in one round trip."""
        row = await self._row(
            f"SELECT {ACCOUNT_COLUMNS}, {NOW} AS now FROM (SELECT 1) AS one "
            "LEFT JOIN accounts AS a ON a.account_id = :account_id",
            account_id=account_id,
        )
        assert row is not None
        return (account_from_row(row) if row["account_id"] is not None else None), row["now"]

    async def account_by_subscription(self, subscription_ref: str) -> str | None:
        """A read across accounts (an invoice knows only its subscription)."""
        row = await self._row(
            "SELECT account_id FROM accounts WHERE subscription_ref = :ref ORDER BY updated_at DESC LIMIT 1",
            ref=subscription_ref,
        )
        return row["account_id"] if row else None

    async def lock_account(self, account_id: str) -> Account | None:
        """NO KEY UPDATE: it serialises the account's writers, but not the inserts whose foreign
        key check takes KEY SHARE on this row (FOR UPDATE made two such writers deadlock)."""
        row = await self._row(
            f"SELECT {ACCOUNT_COLUMNS} FROM accounts AS a WHERE a.account_id = :account_id FOR NO KEY UPDATE",
            account_id=account_id,
        )
        return account_from_row(row) if row else None

    async def insert_account(self, account: Account, now: datetime) -> bool:
        """Create the account with its empty buckets; False if it already exists."""
        created = await self._execute(
            "INSERT INTO accounts (account_id, plan_id, monthly_allowance, period_start, period_end, "
            "calendar_periods, allowance_total, debt, bucket_count, subscription_ref, plan_event_time, "
            "granted_period_start, requests_per_minute, tokens_per_minute, concurrent_holds, expired_holds, "
            "created_at, updated_at) VALUES (:account_id, :plan_id, :monthly_allowance, "
            ":period_start, :period_end, :calendar_periods, 0, 0, :bucket_count, :subscription_ref, "
            ":plan_event_time, :granted_period_start, :requests_per_minute, :tokens_per_minute, "
            ":concurrent_holds, :expired_holds, :now, :now) ON CONFLICT (account_id) DO NOTHING",
            **_account_params(account),
            now=now,
        )
        if not created:
            return False
        await self._execute(
            "INSERT INTO buckets (account_id, pool, bucket, available, held, used) "
            "SELECT :account_id, pool, bucket, 0, 0, 0 FROM unnest(ARRAY['allowance', 'purchased']) AS pool, "
            "generate_series(0, :bucket_count - 1) AS bucket",
            account_id=account.account_id,
            bucket_count=account.bucket_count,
        )
        return True

    async def save_account(self, account: Account, now: datetime) -> None:
        """Write an account's mutable fields; the caller holds its row lock."""
        await self._execute(
            "UPDATE accounts SET plan_id = :plan_id, monthly_allowance = :monthly_allowance, "
            "period_start = :period_start, period_end = :period_end, calendar_periods = :calendar_periods, "
            "allowance_total = :allowance_total, debt = :debt, subscription_ref = :subscription_ref, "
            "plan_event_time = :plan_event_time, granted_period_start = :granted_period_start, "
            "requests_per_minute = :requests_per_minute, tokens_per_minute = :tokens_per_minute, "
            "concurrent_holds = :concurrent_holds, expired_holds = :expired_holds, updated_at = :now "
            "WHERE account_id = :account_id",
            **_account_params(account),
            allowance_total=account.allowance_total,
            debt=account.debt,
            now=now,
        )

    async def claim_period(self, account: Account, following: Period, now: datetime) -> Account | None:
        """Move the account to its next period, once: of concurrent callers crossing the same
        boundary, one updates the row and the others (blocked on its lock) match nothing."""
        row = await self._row(
            "UPDATE accounts AS a SET period_start = :start, period_end = :end, updated_at = :now "
            "WHERE account_id = :account_id AND period_end = :old_end "
            f"RETURNING {ACCOUNT_COLUMNS}",
            account_id=account.account_id,
            start=following.start,
            end=following.end,
            old_end=account.period.end,
            now=now,
        )
        return account_from_row(row) if row else None


def _account_params(account: Account) -> dict[str, Any]:
    return {
        "account_id": account.account_id,
        "plan_id": account.plan_id,
        "monthly_allowance": account.monthly_allowance,
        "period_start": account.period.start,
        "period_end": account.period.end,
        "calendar_periods": account.calendar_periods,
        "bucket_count": account.bucket_count,
        "subscription_ref": account.subscription_ref,
        "plan_event_time": account.plan_event_time,
        "granted_period_start": account.granted_period_start,
        "requests_per_minute": account.limits.requests_per_minute,
        "tokens_per_minute": account.limits.tokens_per_minute,
        "concurrent_holds": account.limits.concurrent_holds,
        "expired_holds": account.expired_holds.value if account.expired_holds else None,
    }


def account_from_row(row: Mapping[str, Any]) -> Account:
    return Account(
        account_id=row["account_id"],
        plan_id=row["plan_id"],
        monthly_allowance=row["monthly_allowance"],
        period=Period(row["period_start"], row["period_end"]),
        calendar_periods=row["calendar_periods"],
        allowance_total=row["allowance_total"],
        debt=row["debt"],
        bucket_count=row["bucket_count"],
        subscription_ref=row["subscription_ref"],
        plan_event_time=row["plan_event_time"],
        granted_period_start=row["granted_period_start"],
        limits=RateLimits(row["requests_per_minute"], row["tokens_per_minute"], row["concurrent_holds"]),
        expired_holds=ExpiredHolds(row["expired_holds"]) if row["expired_holds"] else None,
    )
