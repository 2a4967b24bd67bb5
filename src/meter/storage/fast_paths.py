"""The two statements every model call waits on, sent on asyncpg directly.

Reserve and Commit take one round trip in the common case (the PL/pgSQL functions of migrations
0003 and 0004, each its own transaction). Sent through SQLAlchemy, each paid for statement
compilation, result wrapping and a greenlet switch: about a fifth of the server's CPU at load.
Here they go through asyncpg's own pool and its per-connection prepared-statement cache; the
rest of the service (every decision that needs several statements) stays on SQLAlchemy.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from meter.catalog import Catalog
from meter.domain import ids
from meter.domain.balance import Balance
from meter.domain.callers import acting_caller
from meter.domain.errors import StorageUnavailable
from meter.domain.holds import Hold, NotPlaced, Usage
from meter.storage.clock import DatabaseClock
from meter.storage.database import RETRYABLE_SQLSTATES, Timeouts, unavailable_sqlstate
from meter.storage.hold_queries import balance_from_row

T = TypeVar("T")

RESERVE = (
    "SELECT * FROM meter_reserve_fast($1, $2, CAST($3 AS uuid), $4, $5, $6, $7, CAST($8 AS jsonb), $9, "
    "$10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
)


@dataclass(frozen=True)
class PlanLimits:
    """Every plan's rate limits as the columns meter_reserve_fast takes (0: none): the service's
    catalog goes with each call, so the database needs no copy of it."""

    plans: list[str]
    requests_per_minute: list[int]
    tokens_per_minute: list[int]
    concurrent_holds: list[int]

    @classmethod
    def of(cls, catalog: Catalog) -> PlanLimits:
        plans = list(catalog.plans.values())
        return cls(
            [p.id for p in plans],
            [p.limits.requests_per_minute or 0 for p in plans],
            [p.limits.tokens_per_minute or 0 for p in plans],
            [p.limits.concurrent_holds or 0 for p in plans],
        )


COMMIT = "SELECT * FROM meter_commit_fast($1, CAST($2 AS uuid), $3, $4, $5, $6)"


async def create_pool(dsn: str, *, size: int, timeouts: Timeouts) -> asyncpg.Pool:
    """Connections opened on demand (up to `size`), with the same timeouts as the general path."""
    return await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=size,
        reset=_keep_session,
        server_settings={
            "statement_timeout": str(timeouts.statement_ms),
            "lock_timeout": str(timeouts.lock_ms),
            "idle_in_transaction_session_timeout": str(timeouts.idle_in_transaction_ms),
            "application_name": "meter",
        },
    )


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Nothing to reset: these connections only ever call the two functions, which leave no
    session state behind. asyncpg's default reset (RESET ALL, UNLISTEN, CLOSE ALL, unlocking
    advisory locks) cost one more round trip per RPC. asyncpg still rolls back a transaction left
    open by a cancelled call before this runs."""


class FastPaths:
    def __init__(
        self,
        pool: asyncpg.Pool,
        clock: DatabaseClock,
        *,
        acquire_timeout: float = 5.0,
        plan_limits: PlanLimits | None = None,
        reserve_wait_ms: int = 200,
    ) -> None:
        """`reserve_wait_ms`: how long a Reserve may wait for a locked row that has its tokens
        before handing over to the general path (migration 0011; 0: not at all)."""
        self._pool = pool
        self._clock = clock
        self._acquire_timeout = acquire_timeout
        self._limits = plan_limits or PlanLimits([], [], [], [])
        self._reserve_wait_ms = reserve_wait_ms

    async def reserve(self, hold: Hold, start: int) -> tuple[Hold, Balance] | NotPlaced:
        """Place `hold` (a draft: allowance_held is the amount) in one bucket that has it;
        NotPlaced when the general path must decide (nothing was changed then)."""
        p, params = hold.pricing, hold.params
        row = await self._fetch_row(
            RESERVE,
            hold.account_id,
            hold.request_id,
            ids.hold_id(hold.reservation_id),
            params.model,
            params.input_tokens,
            params.max_output_tokens,
            params.ttl_seconds,
            json.dumps(params.labels, sort_keys=True),
            p.catalog_version,
            p.input_weight,
            p.output_weight,
            p.input_price,
            p.output_price,
            hold.held_tokens,
            start,
            self._clock.offset_seconds,
            self._limits.plans,
            self._limits.requests_per_minute,
            self._limits.tokens_per_minute,
            self._limits.concurrent_holds,
            self._reserve_wait_ms,
        )
        if row["outcome"] != "ok":
            return NotPlaced(limits_checked=row["outcome"] == "checked")
        in_allowance = row["hold_pool"] == "allowance"
        placed = replace(
            hold,
            allowance_held=hold.held_tokens if in_allowance else 0,
            allowance_bucket=row["hold_bucket"] if in_allowance else row["other_bucket"],
            purchased_held=0 if in_allowance else hold.held_tokens,
            purchased_bucket=row["other_bucket"] if in_allowance else row["hold_bucket"],
            period_start=row["period_start"],
            expires_at=row["expires_at"],
        )
        return placed, balance_from_row(hold.account_id, row)

    async def commit(
        self, account_id: str, hold_id: str, input_tokens: int, output_tokens: int
    ) -> tuple[Usage, Balance] | None:
        """Charge an open hold whose usage fits it, in the period it was taken in; None when the
        general path must decide (nothing was changed then)."""
        row = await self._fetch_row(
            COMMIT, account_id, hold_id, input_tokens, output_tokens, self._clock.offset_seconds, acting_caller()
        )
        if row["outcome"] != "ok":
            return None
        usage = Usage(input_tokens, output_tokens, row["charged"], row["cost"], 0, row["late"])
        return usage, balance_from_row(account_id, row)

    async def _fetch_row(self, sql: str, *args: Any) -> asyncpg.Record:
        async def once() -> asyncpg.Record:
            async with self._pool.acquire(timeout=self._acquire_timeout) as connection:
                try:
                    return await connection.fetchrow(sql, *args)
                except asyncpg.InternalClientError:
                    # asyncpg's answer when the server went away mid-statement (MagicStack/asyncpg
                    # #1069): the protocol state is unknown, so the connection must not be reused.
                    connection.terminate()
                    raise

        return await run_statement(once)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.PostgresError) and exc.sqlstate in RETRYABLE_SQLSTATES


async def run_statement(once: Callable[[], Awaitable[T]], *, attempts: int = 8) -> T:
    """Retry what run_transaction retries; report what it reports as unavailable the same way."""
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=0.002, max=0.1),
            reraise=True,
        ):
            with attempt:
                return await once()
    except TimeoutError as exc:
        raise StorageUnavailable("no database connection free in time") from exc
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
        raise StorageUnavailable(type(exc).__name__) from exc
    except asyncpg.PostgresError as exc:
        if unavailable_sqlstate(exc.sqlstate):
            raise StorageUnavailable(type(exc).__name__) from exc
        raise
    raise AssertionError("unreachable: tenacity reraises the last failure")
