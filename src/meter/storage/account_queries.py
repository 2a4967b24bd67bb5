"""Queries on accounts (plan, period, debt)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meter.domain.accounts import Account
from meter.domain.callers import acting_caller
from meter.domain.holds import ExpiredHolds
from meter.domain.limits import RateLimits
from meter.domain.periods import Period
from meter.domain.plans import Rollover
from meter.storage.queries import NOW, Queries

ACCOUNT_COLUMNS = """a.account_id, a.plan_id, a.monthly_allowance, a.period_start, a.period_end,
    a.month_anchor, a.billing_period_start, a.billing_period_end, a.paid_through, a.allowance_after_paid,
    a.allowance_withheld, a.allowance_total, a.debt, a.bucket_count, a.subscription_ref,
    a.plan_event_time, a.granted_period_start, a.requests_per_minute, a.tokens_per_minute, a.concurrent_holds,
    a.expired_holds, a.rollover_cap, a.rollover_days"""


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

    async def open_account(self, account: Account, now: datetime) -> bool:
        """meter_open_account: the account, its empty rows, its first month begun; False if it
        already exists."""
        row = await self._row(
            "SELECT meter_open_account(:account_id, :plan_id, :monthly_allowance, :month_anchor, "
            ":billing_period_start, :billing_period_end, :subscription_ref, :plan_event_time, "
            "CAST(:bucket_count AS smallint), :requests_per_minute, :tokens_per_minute, :concurrent_holds, "
            ":expired_holds, :rollover_cap, :rollover_days, :now, :caller) AS opened",
            **_plan_params(account),
            bucket_count=account.bucket_count,
            now=now,
            caller=acting_caller(),
        )
        assert row is not None
        return bool(row["opened"])

    async def save_plan(self, account: Account, now: datetime) -> None:
        """Write an account's plan and billing (what SetPlan and invoices decide), never its money,
        allowance month or grant: those are the SQL functions'. The caller holds its row lock."""
        await self._execute(
            "UPDATE accounts SET plan_id = :plan_id, monthly_allowance = :monthly_allowance, "
            "month_anchor = :month_anchor, billing_period_start = :billing_period_start, "
            "billing_period_end = :billing_period_end, paid_through = :paid_through, "
            "allowance_after_paid = :allowance_after_paid, subscription_ref = :subscription_ref, "
            "plan_event_time = :plan_event_time, requests_per_minute = :requests_per_minute, "
            "tokens_per_minute = :tokens_per_minute, concurrent_holds = :concurrent_holds, "
            "expired_holds = :expired_holds, rollover_cap = :rollover_cap, rollover_days = :rollover_days, "
            "updated_at = :now WHERE account_id = :account_id",
            **_plan_params(account),
            paid_through=account.paid_through,
            allowance_after_paid=account.allowance_after_paid,
            now=now,
        )

    async def subscription_state(self, account_id: str) -> tuple[str | None, datetime | None]:
        """The subscription's status as Stripe last said it, and the grace its allowance has."""
        row = await self._row(
            "SELECT subscription_status, grace_until FROM accounts WHERE account_id = :account_id",
            account_id=account_id,
        )
        return (row["subscription_status"], row["grace_until"]) if row else (None, None)

    async def save_subscription_state(self, account_id: str, status: str | None, grace_until: datetime | None) -> None:
        """The caller holds the account's row lock."""
        await self._execute(
            "UPDATE accounts SET subscription_status = :status, grace_until = :grace_until "
            "WHERE account_id = :account_id",
            account_id=account_id,
            status=status,
            grace_until=grace_until,
        )

    async def convert_allowance(self, account_id: str, expires_at: datetime, now: datetime) -> int:
        """What is left of the month's allowance becomes a grant of its own (meter_convert_allowance)."""
        row = await self._row(
            "SELECT meter_convert_allowance(:account_id, :expires_at, :now, :caller) AS tokens",
            account_id=account_id,
            expires_at=expires_at,
            now=now,
            caller=acting_caller(),
        )
        assert row is not None
        return int(row["tokens"])

    async def grant_upgrade(self, account_id: str, tokens: int, now: datetime, *, ref: str, note: str) -> int:
        row = await self._row(
            "SELECT meter_grant_upgrade(:account_id, :tokens, :ref, :note, :now, :caller) AS paid",
            account_id=account_id,
            tokens=tokens,
            ref=ref,
            note=note,
            now=now,
            caller=acting_caller(),
        )
        assert row is not None
        return int(row["paid"])

    async def roll_over(self, account_id: str) -> Account | None:
        row = await self._row(
            f"SELECT {ACCOUNT_COLUMNS} FROM meter_roll_over(:account_id, {NOW}) AS a", account_id=account_id
        )
        return account_from_row(row) if row is not None and row["account_id"] is not None else None

    async def begin_month(self, account_id: str, now: datetime, *, expire_now: bool = False) -> int:
        row = await self._row(
            "SELECT meter_begin_month(:account_id, :now, :caller, :expire_now) AS paid",
            account_id=account_id,
            now=now,
            caller=acting_caller(),
            expire_now=expire_now,
        )
        assert row is not None
        return int(row["paid"])

    async def allowance_month(self, anchor: datetime | None, at: datetime) -> Period:
        row = await self._row("SELECT * FROM meter_allowance_month(:anchor, :at)", anchor=anchor, at=at)
        assert row is not None
        return Period(row["month_start"], row["month_end"])

    async def months_beginning(self, anchor: datetime | None, period: Period) -> int:
        row = await self._row(
            "SELECT meter_months_beginning(:anchor, :start, :end) AS months",
            anchor=anchor,
            start=period.start,
            end=period.end,
        )
        assert row is not None
        return int(row["months"])


def _plan_params(account: Account) -> dict[str, Any]:
    return {
        "account_id": account.account_id,
        "plan_id": account.plan_id,
        "monthly_allowance": account.monthly_allowance,
        "month_anchor": account.month_anchor,
        "billing_period_start": account.billing.start if account.billing else None,
        "billing_period_end": account.billing.end if account.billing else None,
        "subscription_ref": account.subscription_ref,
        "plan_event_time": account.plan_event_time,
        "requests_per_minute": account.limits.requests_per_minute,
        "tokens_per_minute": account.limits.tokens_per_minute,
        "concurrent_holds": account.limits.concurrent_holds,
        "expired_holds": account.expired_holds.value if account.expired_holds else None,
        "rollover_cap": account.rollover.cap_tokens if account.rollover else None,
        "rollover_days": account.rollover.days if account.rollover else None,
    }


def account_from_row(row: Mapping[str, Any]) -> Account:
    return Account(
        account_id=row["account_id"],
        plan_id=row["plan_id"],
        monthly_allowance=row["monthly_allowance"],
        period=Period(row["period_start"], row["period_end"]),
        month_anchor=row["month_anchor"],
        billing=Period(row["billing_period_start"], row["billing_period_end"]) if row["billing_period_start"] else None,
        paid_through=row["paid_through"],
        allowance_after_paid=row["allowance_after_paid"],
        allowance_withheld=row["allowance_withheld"],
        allowance_total=row["allowance_total"],
        debt=row["debt"],
        bucket_count=row["bucket_count"],
        subscription_ref=row["subscription_ref"],
        plan_event_time=row["plan_event_time"],
        granted_period_start=row["granted_period_start"],
        limits=RateLimits(row["requests_per_minute"], row["tokens_per_minute"], row["concurrent_holds"]),
        expired_holds=ExpiredHolds(row["expired_holds"]) if row["expired_holds"] else None,
        rollover=Rollover(row["rollover_cap"], row["rollover_days"]) if row["rollover_cap"] else None,
    )
