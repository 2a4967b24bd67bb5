"""Queries on holds (reservations)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meter.domain import ids
from meter.domain.balance import Balance, WarningLevel
from meter.domain.holds import Hold, HoldStatus, Pricing, ReserveParams, Usage
from meter.domain.limits import RateUsage
from meter.domain.periods import Period
from meter.domain.pools import PoolName
from meter.storage.queries import NOW, Queries


class HoldQueries(Queries):
    async def hold_by_request(self, account_id: str, request_id: str) -> Hold | None:
        row = await self._row(
            "SELECT * FROM holds WHERE account_id = :account_id AND request_id = :request_id",
            account_id=account_id,
            request_id=request_id,
        )
        return _hold(row) if row else None

    async def lock_hold(self, account_id: str, hold_id: str) -> tuple[Hold | None, datetime]:
        row = await self._row(
            f"SELECT h.*, {NOW} AS now FROM holds AS h "
            "WHERE h.account_id = :account_id AND h.hold_id = CAST(:hold_id AS uuid) FOR UPDATE",
            account_id=account_id,
            hold_id=hold_id,
        )
        if row is None:
            return None, await self.now()
        return _hold(row), row["now"]

    async def insert_hold(self, hold: Hold, now: datetime) -> bool:
        """Insert the hold and count it on its first row (locked by this transaction already): one
        more open hold, one more request with its tokens in the current minute. One statement, so
        the general path's Reserve keeps its number of round trips. False when a concurrent
        Reserve with the same request_id got there first (then nothing is counted)."""
        pool, bucket = _first_part(hold)
        return bool(
            await self._execute(
                "WITH inserted AS (INSERT INTO holds (account_id, hold_id, request_id, model, input_tokens, "
                "max_output_tokens, ttl_seconds, labels, catalog_version, input_weight, output_weight, input_price, "
                "output_price, allowance_held, allowance_bucket, purchased_held, purchased_bucket, period_start, "
                "status, created_at, expires_at) VALUES (:account_id, CAST(:hold_id AS uuid), :request_id, :model, "
                ":input_tokens, :max_output_tokens, :ttl_seconds, CAST(:labels AS jsonb), :catalog_version, "
                ":input_weight, :output_weight, :input_price, :output_price, :allowance_held, "
                ":allowance_bucket, :purchased_held, :purchased_bucket, :period_start, 'open', :now, "
                ":expires_at) ON CONFLICT (account_id, request_id) DO NOTHING RETURNING 1), "
                "w AS (SELECT date_trunc('minute', CAST(:now AS timestamptz)) AS start) "
                "UPDATE buckets AS b SET open_holds = b.open_holds + 1, "
                "rate_requests = CASE WHEN b.rate_window = w.start THEN b.rate_requests + 1 ELSE 1 END, "
                "rate_tokens = CASE WHEN b.rate_window = w.start THEN b.rate_tokens + :tokens ELSE :tokens END, "
                "rate_window = w.start FROM w "
                "WHERE b.account_id = :account_id AND b.pool = :first_pool AND b.bucket = :first_bucket "
                "AND EXISTS (SELECT 1 FROM inserted)",
                account_id=hold.account_id,
                hold_id=ids.hold_id(hold.reservation_id),
                request_id=hold.request_id,
                model=hold.params.model,
                input_tokens=hold.params.input_tokens,
                max_output_tokens=hold.params.max_output_tokens,
                ttl_seconds=hold.params.ttl_seconds,
                labels=json.dumps(hold.params.labels, sort_keys=True),
                catalog_version=hold.pricing.catalog_version,
                input_weight=hold.pricing.input_weight,
                output_weight=hold.pricing.output_weight,
                input_price=hold.pricing.input_price,
                output_price=hold.pricing.output_price,
                allowance_held=hold.allowance_held,
                allowance_bucket=hold.allowance_bucket,
                purchased_held=hold.purchased_held,
                purchased_bucket=hold.purchased_bucket,
                period_start=hold.period_start,
                now=now,
                expires_at=hold.expires_at,
                tokens=hold.held_tokens,
                first_pool=pool,
                first_bucket=bucket,
            )
        )

    async def rate_usage(self, account_id: str, now: datetime) -> RateUsage:
        """The account's counts in the current minute and its open holds (a read of its rows)."""
        row = await self._row(
            "SELECT w.start AS window_start, "
            "coalesce(sum(b.rate_requests) FILTER (WHERE b.rate_window = w.start), 0) AS requests, "
            "coalesce(sum(b.rate_tokens) FILTER (WHERE b.rate_window = w.start), 0) AS tokens, "
            "coalesce(sum(b.open_holds), 0) AS open_holds "
            "FROM (SELECT date_trunc('minute', CAST(:now AS timestamptz)) AS start) AS w "
            "LEFT JOIN buckets AS b ON b.account_id = :account_id GROUP BY w.start",
            account_id=account_id,
            now=now,
        )
        assert row is not None
        return RateUsage(row["window_start"], int(row["requests"]), int(row["tokens"]), int(row["open_holds"]))

    async def soonest_open_expiry(self, account_id: str) -> datetime | None:
        """Through the open-holds index, in expiry order: stops at the account's first."""
        row = await self._row(
            "SELECT expires_at FROM holds WHERE status = 'open' AND account_id = :account_id "
            "ORDER BY expires_at LIMIT 1",
            account_id=account_id,
        )
        return row["expires_at"] if row else None

    async def finish_hold(self, hold: Hold, status: HoldStatus, now: datetime, usage: Usage | None = None) -> None:
        """Record how the hold ended; a hold that was open is no longer counted on its first row
        (in the same statement: no round trip added to Commit, Release or expiry)."""
        pool, bucket = _first_part(hold)
        await self._execute(
            "WITH finished AS (UPDATE holds SET status = :status, settled_at = :now, "
            "usage_input_tokens = :input_tokens, usage_output_tokens = :output_tokens, charged_tokens = :charged, "
            "cost_micros = :cost, unbilled_tokens = :unbilled, late = :late "
            "WHERE account_id = :account_id AND hold_id = CAST(:hold_id AS uuid) RETURNING 1) "
            "UPDATE buckets SET open_holds = open_holds - 1 "
            "WHERE :was_open AND account_id = :account_id AND pool = :first_pool AND bucket = :first_bucket "
            "AND EXISTS (SELECT 1 FROM finished)",
            was_open=hold.status is HoldStatus.OPEN,
            first_pool=pool,
            first_bucket=bucket,
            account_id=hold.account_id,
            hold_id=ids.hold_id(hold.reservation_id),
            status=status.value,
            now=now,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            charged=usage.charged_tokens if usage else None,
            cost=usage.cost_micros if usage else None,
            unbilled=usage.unbilled_tokens if usage else None,
            late=usage.late if usage else None,
        )

    async def extend_hold(self, hold: Hold, expires_at: datetime) -> None:
        await self._execute(
            "UPDATE holds SET expires_at = :expires_at WHERE account_id = :account_id "
            "AND hold_id = CAST(:hold_id AS uuid)",
            account_id=hold.account_id,
            hold_id=ids.hold_id(hold.reservation_id),
            expires_at=expires_at,
        )

    async def open_holds(self, account_id: str, limit: int) -> tuple[list[tuple[Hold, datetime]], int]:
        """The account's open holds soonest to expire first (at most `limit`, with when each was
        made), and how many are open in all. No index of its own: one more index entry per
        Reserve cost a hot account measurably. The planner reads either the account's holds
        (primary key) or every open hold (the sweeper's partial index), whichever is fewer."""
        rows = await self._rows(
            "SELECT h.*, count(*) OVER () AS open_count FROM holds AS h "
            "WHERE h.account_id = :account_id AND h.status = 'open' ORDER BY h.expires_at, h.hold_id LIMIT :limit",
            account_id=account_id,
            limit=limit,
        )
        if not rows:
            return [], 0
        return [(_hold(row), row["created_at"]) for row in rows], int(rows[0]["open_count"])

    # The sweeper's cross-account reads (no locks; each item is then settled in its own transaction).

    async def expired_holds(self, limit: int) -> list[tuple[str, str]]:
        rows = await self._rows(
            f"SELECT account_id, hold_id::text AS hold_id FROM holds WHERE status = 'open' "
            f"AND expires_at <= {NOW} ORDER BY expires_at LIMIT :limit",
            limit=limit,
        )
        return [(r["account_id"], r["hold_id"]) for r in rows]

    async def open_holds_summary(self) -> tuple[int, float]:
        """(open holds, seconds the longest-expired open hold is past its expiry), through the
        partial index of open holds: its cost follows the holds open, not the table."""
        row = await self._row(
            f"SELECT count(*) AS open, coalesce(extract(epoch FROM {NOW} - min(expires_at) "
            f"FILTER (WHERE expires_at <= {NOW})), 0) AS lag FROM holds WHERE status = 'open'"
        )
        assert row is not None
        return int(row["open"]), float(row["lag"])

    async def ended_periods(self, limit: int) -> list[str]:
        rows = await self._rows(
            f"SELECT account_id FROM accounts WHERE period_end <= {NOW} ORDER BY period_end LIMIT :limit",
            limit=limit,
        )
        return [r["account_id"] for r in rows]


def _first_part(hold: Hold) -> tuple[str, int]:
    """The row a hold is counted on: its allowance bucket when it holds allowance, else its
    purchased bucket (as migration 0008 and usage_daily count it)."""
    if hold.allowance_held > 0:
        return PoolName.ALLOWANCE.value, hold.allowance_bucket
    return PoolName.PURCHASED.value, hold.purchased_bucket


def usage_from_row(row: Mapping[str, Any]) -> Usage | None:
    """A committed hold's usage (None while it is not committed)."""
    if row["charged_tokens"] is None:
        return None
    return Usage(
        input_tokens=row["usage_input_tokens"],
        output_tokens=row["usage_output_tokens"],
        charged_tokens=row["charged_tokens"],
        cost_micros=row["cost_micros"],
        unbilled_tokens=row["unbilled_tokens"],
        late=row["late"],
    )


def labels_from_row(row: Mapping[str, Any]) -> dict[str, str]:
    labels = row["labels"]
    return json.loads(labels) if isinstance(labels, str) else dict(labels)


def _hold(row: Mapping[str, Any]) -> Hold:
    usage = usage_from_row(row)
    return Hold(
        account_id=row["account_id"],
        reservation_id=f"{row['account_id']}/{str(row['hold_id']).replace('-', '')}",
        request_id=row["request_id"],
        params=ReserveParams(
            model=row["model"],
            input_tokens=row["input_tokens"],
            max_output_tokens=row["max_output_tokens"],
            ttl_seconds=row["ttl_seconds"],
            labels=labels_from_row(row),
        ),
        pricing=Pricing(
            catalog_version=row["catalog_version"],
            input_weight=row["input_weight"],
            output_weight=row["output_weight"],
            input_price=row["input_price"],
            output_price=row["output_price"],
        ),
        allowance_held=row["allowance_held"],
        allowance_bucket=row["allowance_bucket"],
        purchased_held=row["purchased_held"],
        purchased_bucket=row["purchased_bucket"],
        period_start=row["period_start"],
        status=HoldStatus(row["status"]),
        expires_at=row["expires_at"],
        usage=usage,
    )


def balance_from_row(account_id: str, row: Mapping[str, Any]) -> Balance:
    """A balance snapshot from a row of the account's plan and period and its bucket sums (the
    balance query, and the fast-path functions that return one with their outcome)."""
    return Balance(
        account_id=account_id,
        plan_id=row["plan_id"],
        period=Period(row["period_start"], row["period_end"]),
        allowance_total=row["allowance_total"],
        allowance_remaining=int(row["allowance_remaining"]),
        purchased_remaining=int(row["purchased_remaining"]),
        allowance_held=int(row["allowance_held"]),
        purchased_held=int(row["purchased_held"]),
        debt=row["debt"],
        used_this_period=int(row["used"]),
        announced=WarningLevel.from_bits(row["warned"]),
    )
