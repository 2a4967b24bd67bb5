"""The calls every model call waits on: one statement each, decided in the database.

Reserve, Commit, Release, ExtendReservation and expiry are the PL/pgSQL functions of storage/sql
(meter_reserve, meter_commit, meter_release, meter_extend, meter_expire): every rule of money they
apply is written there once, and runs under the rows' locks in one round trip (no BEGIN/COMMIT).
Here they are called, on the pool's asyncpg connection itself (run_statement), and their rows read
into the domain's answers. With coalescing on, the Reserves (and the Commits) that arrive while
`coalesce` of them are in flight go together, as one call of meter_reserve_many (meter_commit_many),
which runs meter_reserve (meter_commit) for each: see storage/coalescer.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple, TypeVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.domain import ids
from meter.domain.answers import Charged, Expiry, Extended, Outcome, RateRefusal, Released, Reserved
from meter.domain.balance import Balance, WarningLevel
from meter.domain.budgets import BudgetKey, BudgetRefusal, BudgetState, BudgetUnit
from meter.domain.callers import SYSTEM, acting_caller
from meter.domain.holds import CallTokens, CallUsage, HoldStatus, Pricing, ReserveParams
from meter.domain.limits import PlanLimits
from meter.storage.balance_rows import balance_from_row
from meter.storage.clock import DatabaseClock
from meter.storage.coalescer import Coalescer
from meter.storage.engine import run_statement, run_statement_rows

# A Reserve's own arguments are one meter_reserve_call (a batch's, an array of them), the pinned
# prices one meter_pricing inside it (and ChargeUsage's): asyncpg sends a tuple as the composite.
RESERVE = "SELECT * FROM meter_reserve($1, $2, $3, $4, $5, $6, $7, $8)"
COMMIT = "SELECT * FROM meter_commit($1, CAST($2 AS uuid), $3, $4, $5, $6, $7, $8, $9)"
RELEASE = "SELECT * FROM meter_release($1, CAST($2 AS uuid), $3, $4)"
EXTEND = "SELECT * FROM meter_extend($1, CAST($2 AS uuid), $3, $4)"
RESERVE_MANY = "SELECT * FROM meter_reserve_many($1, $2, $3, $4, $5, $6, $7, $8)"
COMMIT_MANY = "SELECT * FROM meter_commit_many($1, CAST($2 AS uuid[]), $3, $4, $5, $6, $7, $8, $9)"
EXPIRE = "SELECT meter_expire($1, CAST($2 AS uuid), $3, $4, $5) AS outcome"
CHARGE_USAGE = (
    "SELECT * FROM meter_charge_usage($1, $2, CAST($3 AS uuid), $4, $5, $6, $7, $8, $9, CAST($10 AS jsonb), $11, "
    "$12, $13)"
)


class _Reserve(NamedTuple):
    """One Reserve's own arguments: a meter_reserve_call, field for field."""

    account_id: str
    request_id: str
    hold_id: str
    model: str
    input_tokens: int
    max_output_tokens: int
    ttl_seconds: int
    labels: str
    pricing: tuple[str | int, ...]  # a meter_pricing (_pinned)
    start: int


class _Commit(NamedTuple):
    account_id: str
    hold_id: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    caller: str  # read where the call arrived: a batch carries the callers of all its calls


class HotPath:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: DatabaseClock,
        *,
        plan_limits: PlanLimits | None = None,
        reserve_wait_ms: int = 200,
        sweep_seconds: float = 1.0,
        coalesce: int = 0,
        coalesced: Callable[[str, int], None] = lambda call, size: None,
    ) -> None:
        """`reserve_wait_ms`: how long a Reserve may wait for a locked row that has its tokens
        before taking them from all rows (0: not at all). `sweep_seconds`: how often expired holds
        are given back, part of a concurrent-holds refusal's retry delay. `coalesce`: 0, every
        Reserve and Commit is its own statement; n, at most n Reserve statements (and n Commit
        statements) in flight, the calls arriving meanwhile going together in the next one.
        `coalesced`: told each statement's size, by call ("reserve", "commit")."""
        self._engine = engine
        self._clock = clock
        self._limits = plan_limits or PlanLimits([], [], [], [])
        self._reserve_wait_ms = reserve_wait_ms
        self._sweep_seconds = sweep_seconds
        self._reserve: Callable[[_Reserve], Awaitable[Reserved]] = self._reserve_alone
        self._commit: Callable[[_Commit], Awaitable[Charged]] = self._commit_alone
        self._coalescing = coalesce > 0
        if coalesce:
            self._reserve = Coalescer(
                self._reserve_alone,
                self._reserve_together,
                in_flight=coalesce,
                sent=lambda size: coalesced("reserve", size),
            )
            self._commit = Coalescer(
                self._commit_alone,
                self._commit_together,
                in_flight=coalesce,
                sent=lambda size: coalesced("commit", size),
            )

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
            await asyncio.gather(*(_warm(raw.driver_connection, self._coalescing) for raw in raws))
        finally:
            for raw in raws:
                raw.close()

    async def reserve(
        self, account_id: str, request_id: str, params: ReserveParams, pricing: Pricing, start: int
    ) -> Reserved:
        return await self._reserve(
            _Reserve(
                account_id,
                request_id,
                ids.new_hold_id(),
                params.model,
                params.input_tokens,
                params.max_output_tokens,
                params.ttl_seconds,
                _labels(params.labels),
                _pinned(pricing),
                start,
            )
        )

    def _reserve_shared(self) -> tuple[Any, ...]:
        """meter_reserve's arguments that every Reserve shares, after its own."""
        limits = self._limits
        return (
            self._clock.offset_seconds,
            limits.plans,
            limits.requests_per_minute,
            limits.tokens_per_minute,
            limits.concurrent_holds,
            self._reserve_wait_ms,
            self._sweep_seconds,
        )

    async def _reserve_alone(self, call: _Reserve) -> Reserved:
        return _reserved(call.account_id, await run_statement(self._engine, RESERVE, call, *self._reserve_shared()))

    async def _reserve_together(self, calls: list[_Reserve]) -> list[Reserved]:
        rows = await run_statement_rows(self._engine, RESERVE_MANY, calls, *self._reserve_shared())
        return _in_call_order(rows, [call.account_id for call in calls], _reserved)

    async def commit(self, reservation_id: str, tokens: CallTokens) -> Charged:
        account_id = ids.reservation_account(reservation_id)
        return await self._commit(_Commit(account_id, ids.hold_id(reservation_id), *_classes(tokens), acting_caller()))

    async def _commit_alone(self, call: _Commit) -> Charged:
        row = await run_statement(self._engine, COMMIT, *call[:-1], self._clock.offset_seconds, call.caller)
        return _charged(call.account_id, row)

    async def _commit_together(self, calls: list[_Commit]) -> list[Charged]:
        *columns, callers = (list(column) for column in zip(*calls, strict=True))
        rows = await run_statement_rows(self._engine, COMMIT_MANY, *columns, self._clock.offset_seconds, callers)
        return _in_call_order(rows, [call.account_id for call in calls], _charged)

    async def release(self, reservation_id: str) -> Released:
        account_id = ids.reservation_account(reservation_id)
        row = await run_statement(
            self._engine,
            RELEASE,
            account_id,
            ids.hold_id(reservation_id),
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

    async def charge_usage(self, account_id: str, request_id: str, usage: CallUsage, pricing: Pricing) -> Charged:
        row = await run_statement(
            self._engine,
            CHARGE_USAGE,
            account_id,
            request_id,
            ids.new_hold_id(),
            usage.model,
            *_classes(usage.tokens),
            _labels(usage.labels),
            _pinned(pricing),
            self._clock.offset_seconds,
            acting_caller(),
        )
        return dataclasses.replace(_charged(account_id, row), reservation_id=row["reservation_id"] or "")

    async def expire(self, account_id: str, hold_id: str, *, charge: bool) -> Expiry:
        row = await run_statement(
            self._engine,
            EXPIRE,
            account_id,
            hold_id,
            charge,
            self._clock.offset_seconds,
            acting_caller(),
        )
        return Expiry(Outcome(row["outcome"]))


def _labels(labels: Mapping[str, str]) -> str:
    """Labels as the functions take them (jsonb text); most calls have none."""
    return json.dumps(labels, sort_keys=True) if labels else "{}"


def _classes(tokens: CallTokens) -> tuple[int, int, int, int, int]:
    """A call's tokens in the order the functions take them."""
    return (
        tokens.input_tokens,
        tokens.output_tokens,
        tokens.cached_input_tokens,
        tokens.cache_write_tokens,
        tokens.reasoning_tokens,
    )


def _pinned(pricing: Pricing) -> tuple[str | int, ...]:
    """What a hold pins: a meter_pricing, field for field."""
    return (
        pricing.catalog_version,
        pricing.input_weight,
        pricing.output_weight,
        pricing.input_price,
        pricing.output_price,
        pricing.cached_input_weight,
        pricing.cache_write_weight,
        pricing.reasoning_weight,
        pricing.cached_input_price,
        pricing.cache_write_price,
        pricing.reasoning_price,
        _labels(pricing.usage_labels),
    )


_NO_ACCOUNT = ""  # refused by ids.account_id, so no account has it
_NO_HOLD = "00000000-0000-0000-0000-000000000000"


# A Reserve for no account, with arguments of the types the real ones have, and the shared ones.
_WARM_RESERVE = _Reserve(_NO_ACCOUNT, "warm-up", _NO_HOLD, "", 0, 1, 1, "{}", ("", *[0] * 10, "{}"), 0)
_WARM_SHARED: tuple[Any, ...] = (0.0, [], [], [], [], 0, 0.0)


async def _warm(connection: asyncpg.Connection, coalescing: bool) -> None:
    """Each hot-path statement once, with the same text (so that it lands in the connection's
    statement cache) and arguments of the same types as the calls it prepares for; with
    coalescing, the batches' statements too."""
    await connection.fetchrow(RESERVE, _WARM_RESERVE, *_WARM_SHARED)
    await connection.fetchrow(COMMIT, _NO_ACCOUNT, _NO_HOLD, 0, 0, 0, 0, 0, 0.0, SYSTEM)
    await connection.fetchrow(RELEASE, _NO_ACCOUNT, _NO_HOLD, 0.0, SYSTEM)
    await connection.fetchrow(EXTEND, _NO_ACCOUNT, _NO_HOLD, 1, 0.0)
    if coalescing:
        await connection.fetch(RESERVE_MANY, [_WARM_RESERVE], *_WARM_SHARED)
        await connection.fetch(COMMIT_MANY, [_NO_ACCOUNT], [_NO_HOLD], [0], [0], [0], [0], [0], 0.0, [SYSTEM])


def _reserved(account_id: str, row: asyncpg.Record) -> Reserved:
    outcome = Outcome(row["outcome"])
    refusal = None
    if outcome is Outcome.RATE_LIMITED:
        refusal = RateRefusal(row["limit_name"], row["limit_value"], row["retry_after"])
    budget_refusal = None
    if outcome is Outcome.BUDGET_EXCEEDED:
        budget_refusal = BudgetRefusal(
            BudgetKey(row["budget_key"], row["budget_value"]),
            BudgetUnit(row["budget_unit"]),
            row["budget_cap"],
            row["budget_remaining"],
            row["budget_required"],
        )
    return Reserved(
        outcome,
        _balance(account_id, row),
        reservation_id=row["reservation_id"] or "",
        held_tokens=row["held"] or 0,
        expires_at=row["expires_at"],
        catalog_version=row["catalog_version"] or "",
        status=HoldStatus(row["status"] or "open"),
        reused_field=row["reused_field"] or "",
        refusal=refusal,
        required=row["required"],
        across=row["across"],
        budget_refusal=budget_refusal,
    )


def _charged(account_id: str, row: asyncpg.Record) -> Charged:
    return Charged(
        Outcome(row["outcome"]),
        _balance(account_id, row),
        charged_tokens=row["charged"] or 0,
        cost_micros=row["cost"] or 0,
        unbilled_tokens=row["unbilled"] or 0,
        late=bool(row.get("late")),  # ChargeUsage's answer has none: never late
        reused_field=row["reused_field"] or "",
        budgets=_budget_states(row["counted_budgets"]),
    )


T = TypeVar("T")


def _in_call_order(
    rows: list[asyncpg.Record], accounts: list[str], read: Callable[[str, asyncpg.Record], T]
) -> list[T]:
    """A batch's rows come back in the order they ran (by account): each goes back to its call
    (its column n, from 1), read with the account of that call."""
    answers: list[T | None] = [None] * len(accounts)
    for row in rows:
        index = row["n"] - 1
        answers[index] = read(accounts[index], row)
    if any(answer is None for answer in answers):
        raise AssertionError("a coalesced statement left a call without its answer")
    return answers  # type: ignore[return-value]


def _budget_states(states: list[dict[str, int]] | None) -> tuple[BudgetState, ...]:
    """meter_budget_states' JSON, as the pool's connections decode jsonb (None: the call counted
    against no budget)."""
    return tuple(
        BudgetState(s["budget_id"], s["cap"], s["used"], s["held"], WarningLevel.from_bits(s["announced"]))
        for s in states or ()
    )


def _balance(account_id: str, row: asyncpg.Record) -> Balance | None:
    """The balance every answer carries, its meter_balance_row (None when the account does not
    exist)."""
    balance = row["balance"]
    if balance is None or balance["plan_id"] is None:
        return None
    return balance_from_row(account_id, balance)
