"""Queries on holds (reservations)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meter.domain.holds import CallTokens, Hold, HoldStatus, Pricing, ReserveParams, Usage
from meter.domain.limits import PlanLimits, RateLimits, RateUsage
from meter.storage.queries import NOW, Queries


class HoldQueries(Queries):
    async def rate_usage(self, account_id: str, now: datetime) -> RateUsage:
        """The account's counts in the current minute and its open holds (a read of its rows)."""
        row = await self._row("SELECT * FROM meter_rate_counts(:account_id, :now)", account_id=account_id, now=now)
        assert row is not None
        return RateUsage(row["window_start"], row["requests"], row["tokens"], row["open_holds"])

    async def rate_limits(self, account_id: str, plans: PlanLimits) -> RateLimits:
        """The account's limits: its own where set, its plan's elsewhere (meter_rate_limits)."""
        row = await self._row(
            "SELECT l.* FROM accounts AS a, meter_rate_limits(a, :plans, :requests_per_minute, :tokens_per_minute, "
            ":concurrent_holds) AS l WHERE a.account_id = :account_id",
            account_id=account_id,
            plans=plans.plans,
            requests_per_minute=plans.requests_per_minute,
            tokens_per_minute=plans.tokens_per_minute,
            concurrent_holds=plans.concurrent_holds,
        )
        assert row is not None
        return RateLimits(row["requests_per_minute"], row["tokens_per_minute"], row["concurrent_holds"])

    async def open_holds(self, account_id: str, limit: int) -> tuple[list[tuple[Hold, datetime]], int]:
        """The account's open holds soonest to expire first (at most `limit`, with when each was
        made), and how many are open in all. No index of its own: one more index entry per
        Reserve cost a hot account measurably. The planner reads either the account's holds
        (primary key) or every open hold (the sweeper's partial index), whichever is fewer."""
        rows = await self._rows(
            "SELECT h.*, meter_reservation_id(h.account_id, h.hold_id) AS reservation_id, "
            "count(*) OVER () AS open_count FROM holds AS h "
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

    async def tell_expiring(self, notice_hours: int, limit: int) -> int:
        """meter_tell_expiring: balance.expiring to the accounts whose allowance month ends within
        `notice_hours` with tokens left, once a month; how many were told."""
        row = await self._row(
            f"SELECT meter_tell_expiring({NOW}, make_interval(hours => :hours), :limit) AS told",
            hours=notice_hours,
            limit=limit,
        )
        assert row is not None
        return int(row["told"])

    async def ended_periods(self, limit: int) -> list[str]:
        rows = await self._rows(
            f"SELECT account_id FROM accounts WHERE period_end <= {NOW} ORDER BY period_end LIMIT :limit",
            limit=limit,
        )
        return [r["account_id"] for r in rows]


def usage_from_row(row: Mapping[str, Any]) -> Usage | None:
    """A committed hold's usage (None while it is not committed)."""
    if row["charged_tokens"] is None:
        return None
    return Usage(
        tokens=CallTokens(
            input_tokens=row["usage_input_tokens"],
            output_tokens=row["usage_output_tokens"],
            cached_input_tokens=row["usage_cached_input_tokens"],
            cache_write_tokens=row["usage_cache_write_tokens"],
            reasoning_tokens=row["usage_reasoning_tokens"],
        ),
        charged_tokens=row["charged_tokens"],
        cost_micros=row["cost_micros"],
        unbilled_tokens=row["unbilled_tokens"],
        late=row["late"],
    )


def labels_from_row(row: Mapping[str, Any], column: str = "labels") -> dict[str, str]:
    labels = row[column]
    return json.loads(labels) if isinstance(labels, str) else dict(labels)


def _hold(row: Mapping[str, Any]) -> Hold:
    usage = usage_from_row(row)
    return Hold(
        account_id=row["account_id"],
        reservation_id=row["reservation_id"],
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
            cached_input_weight=row["cached_input_weight"],
            cache_write_weight=row["cache_write_weight"],
            reasoning_weight=row["reasoning_weight"],
            cached_input_price=row["cached_input_price"],
            cache_write_price=row["cache_write_price"],
            reasoning_price=row["reasoning_price"],
            usage_labels=labels_from_row(row, "usage_labels"),
        ),
        held=row["held"],
        period_start=row["period_start"],
        status=HoldStatus(row["status"]),
        expires_at=row["expires_at"],
        usage=usage,
    )
