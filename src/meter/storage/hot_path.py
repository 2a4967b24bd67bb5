"""The calls every model call waits on: one statement each, decided in the database.

Reserve, Commit, Release, ExtendReservation and expiry are the PL/pgSQL functions of storage/sql
(meter_reserve, meter_commit, meter_release, meter_extend, meter_expire): every rule of money they
apply is written there once, and runs under the rows' locks in one round trip (no BEGIN/COMMIT).
Here they are called, on the pool's asyncpg connection itself (run_statement), and their rows read
into the domain's answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.domain import ids
from meter.domain.answers import Charged, Expiry, Extended, Outcome, RateRefusal, Released, Reserved
from meter.domain.balance import Balance, WarningLevel
from meter.domain.callers import SYSTEM, acting_caller
from meter.domain.holds import HoldStatus, Pricing, ReserveParams
from meter.domain.limits import PlanLimits
from meter.domain.periods import Period
from meter.storage.clock import DatabaseClock
from meter.storage.database import run_statement

RESERVE = (
    "SELECT * FROM meter_reserve($1, $2, CAST($3 AS uuid), $4, $5, $6, $7, CAST($8 AS jsonb), $9, $10, $11, "
    "$12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
)
COMMIT = "SELECT * FROM meter_commit($1, CAST($2 AS uuid), $3, $4, $5, $6, $7)"
RELEASE = "SELECT * FROM meter_release($1, CAST($2 AS uuid), $3, $4, $5)"
EXTEND = "SELECT * FROM meter_extend($1, CAST($2 AS uuid), $3, $4)"
EXPIRE = "SELECT meter_expire($1, CAST($2 AS uuid), $3, $4, $5) AS outcome"


class HotPath:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: DatabaseClock,
        *,
        plan_limits: PlanLimits | None = None,
        reserve_wait_ms: int = 200,
        sweep_seconds: float = 1.0,
    ) -> None:
        """`reserve_wait_ms`: how long a Reserve may wait for a locked row that has its tokens
        before taking them from all rows (0: not at all). `sweep_seconds`: how often expired holds
        are given back, part of a concurrent-holds refusal's retry delay."""
        self._engine = engine
        self._clock = clock
        self._limits = plan_limits or PlanLimits([], [], [], [])
        self._reserve_wait_ms = reserve_wait_ms
        self._sweep_seconds = sweep_seconds

    async def warm_up(self, connections: int) -> None:
        """Open `connections` of the pool and run each of the hot path's statements once on each,
        for an account that cannot exist (the empty id: every function answers not found and
        changes nothing). A new connection's first Reserve took 13-24 ms here and its first
        Commit 5 ms (connecting, preparing the statement, compiling the PL/pgSQL functions and
        planning their first statements), against 2 ms once warm: under load just after a start,
        the first calls on each of the pool's connections made the tail. Called before serving."""
        raws = []
        try:
            for _ in range(connections):
                raws.append(await self._engine.raw_connection())  # held, so that each is another one
            await asyncio.gather(*(_warm(raw.driver_connection) for raw in raws))
        finally:
            for raw in raws:
                raw.close()

    async def reserve(
        self, account_id: str, request_id: str, params: ReserveParams, pricing: Pricing, start: int
    ) -> Reserved:
        row = await run_statement(
            self._engine,
            RESERVE,
            account_id,
            request_id,
            ids.new_hold_id(),
            params.model,
            params.input_tokens,
            params.max_output_tokens,
            params.ttl_seconds,
            json.dumps(params.labels, sort_keys=True),
            pricing.catalog_version,
            pricing.input_weight,
            pricing.output_weight,
            pricing.input_price,
            pricing.output_price,
            start,
            self._clock.offset_seconds,
            self._limits.plans,
            self._limits.requests_per_minute,
            self._limits.tokens_per_minute,
            self._limits.concurrent_holds,
            self._reserve_wait_ms,
            self._sweep_seconds,
        )
        outcome = Outcome(row["outcome"])
        refusal = None
        if outcome is Outcome.RATE_LIMITED:
            refusal = RateRefusal(row["limit_name"], row["limit_value"], row["retry_after"])
        return Reserved(
            outcome,
            _balance(account_id, row),
            reservation_id=ids.reservation_id(account_id, str(row["hold_id"])) if row["hold_id"] else "",
            held_tokens=row["held"] or 0,
            expires_at=row["expires_at"],
            catalog_version=row["catalog_version"] or "",
            status=HoldStatus(row["status"] or "open"),
            reused_field=row["reused_field"] or "",
            refusal=refusal,
            required=row["required"],
            across=row["across"],
        )

    async def commit(self, reservation_id: str, input_tokens: int, output_tokens: int) -> Charged:
        account_id = ids.reservation_account(reservation_id)
        row = await run_statement(
            self._engine,
            COMMIT,
            account_id,
            ids.hold_id(reservation_id),
            reservation_id,
            input_tokens,
            output_tokens,
            self._clock.offset_seconds,
            acting_caller(),
        )
        return Charged(
            Outcome(row["outcome"]),
            _balance(account_id, row),
            charged_tokens=row["charged"] or 0,
            cost_micros=row["cost"] or 0,
            unbilled_tokens=row["unbilled"] or 0,
            late=bool(row["late"]),
            reused_field=row["reused_field"] or "",
        )

    async def release(self, reservation_id: str) -> Released:
        account_id = ids.reservation_account(reservation_id)
        row = await run_statement(
            self._engine,
            RELEASE,
            account_id,
            ids.hold_id(reservation_id),
            reservation_id,
            self._clock.offset_seconds,
            acting_caller(),
        )
        return Released(Outcome(row["outcome"]), _balance(account_id, row))

    async def extend(self, reservation_id: str, ttl_seconds: int) -> Extended:
        row = await run_statement(
            self._engine,
            EXTEND,
            ids.reservation_account(reservation_id),
            ids.hold_id(reservation_id),
            ttl_seconds,
            self._clock.offset_seconds,
        )
        return Extended(Outcome(row["outcome"]), row["expires_at"])

    async def expire(self, account_id: str, hold_id: str) -> Expiry:
        row = await run_statement(
            self._engine,
            EXPIRE,
            account_id,
            hold_id,
            ids.reservation_id(account_id, hold_id),
            self._clock.offset_seconds,
            acting_caller(),
        )
        return Expiry(Outcome(row["outcome"]))


_NO_ACCOUNT = ""  # refused by ids.account_id, so no account has it
_NO_HOLD = "00000000-0000-0000-0000-000000000000"


async def _warm(connection: asyncpg.Connection) -> None:
    """Each hot-path statement once, with the same text (so that it lands in the connection's
    statement cache) and arguments of the same types as the calls it prepares for."""
    await connection.fetchrow(
        RESERVE, _NO_ACCOUNT, "warm-up", _NO_HOLD, "", 0, 1, 1, "{}", "", 0, 0, 0, 0, 0, 0.0, [], [], [], [], 0, 0.0
    )
    reservation = ids.reservation_id(_NO_ACCOUNT, _NO_HOLD)
    await connection.fetchrow(COMMIT, _NO_ACCOUNT, _NO_HOLD, reservation, 0, 0, 0.0, SYSTEM)
    await connection.fetchrow(RELEASE, _NO_ACCOUNT, _NO_HOLD, reservation, 0.0, SYSTEM)
    await connection.fetchrow(EXTEND, _NO_ACCOUNT, _NO_HOLD, 1, 0.0)


def _balance(account_id: str, row: asyncpg.Record | Mapping[str, Any]) -> Balance | None:
    """The balance every answer carries (None when the account does not exist)."""
    if row["plan_id"] is None:
        return None
    return balance_from_row(account_id, row)


def balance_from_row(account_id: str, row: asyncpg.Record | Mapping[str, Any]) -> Balance:
    """A balance from a row of meter_balance's columns (GetBalance's query, and every answer of
    the hot path)."""
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
