"""Engine, connection settings, and the runners (a transaction, or one hot-path statement) that
retry what may be retried.

Every connection sets statement_timeout, lock_timeout and idle_in_transaction_session_timeout so
that no request can hang on a lock or a stuck client forever. Only serialization failures,
deadlocks and `Conflict` (a unit of work that lost a race on a unique key: the same kind of
failure, detected by the use case) are retried, with the same work in a new transaction; anything
else propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import URL, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from meter.config import DATABASE_URL_SCHEMES
from meter.domain.errors import StorageUnavailable
from meter.service.ports import Conflict

T = TypeVar("T")

# SQLSTATEs worth a retry: the same work in a new transaction can succeed.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected


@dataclass(frozen=True)
class Timeouts:
    statement_ms: int = 5_000
    lock_ms: int = 3_000
    idle_in_transaction_ms: int = 10_000


def async_url(url: str) -> URL:
    """Accept plain postgresql:// URLs (as libpq and operators write them) and use asyncpg."""
    parsed = make_url(url)
    if parsed.drivername in DATABASE_URL_SCHEMES:
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}: use postgresql://")


# What connecting fails with when the database is not there for us: nothing listens, the login or
# the database is refused, the server is starting or full.
_UNREACHABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


def unreachable(error: BaseException) -> str | None:
    """Why the database could not be used, when `error` (or what caused it) is a failure to
    connect; None for any other error."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, _UNREACHABLE):
            return f"{type(seen).__name__}: {seen}".rstrip(": ")
        seen = seen.__cause__ or seen.__context__
    return None


def shown(url: str) -> str:
    """A database URL as an operator may see it: no password."""
    return make_url(url).render_as_string(hide_password=True)


def dsn(url: str) -> str:
    """The URL as libpq and asyncpg take it (no SQLAlchemy driver name)."""
    return async_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(url: str, *, pool_size: int = 10, timeouts: Timeouts | None = None) -> AsyncEngine:
    timeouts = timeouts or Timeouts()
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        # No overflow: connections above the pool size would be opened and closed again under
        # every burst (seen as ~2 % of the server's CPU in asyncpg.connect); callers beyond the
        # pool wait a moment for a connection instead.
        max_overflow=0,
        # The connection used last is taken first, as asyncpg's own pool does: under a light load the
        # same few backends serve every call, warm, instead of all of them in turn (about 0.1 ms of
        # PostgreSQL's CPU less per Reserve and Commit in `meter bench`).
        pool_use_lifo=True,
        pool_timeout=timeouts.statement_ms / 1000,
        # No pre-ping: it would cost a round trip on every checkout. A disconnect invalidates the
        # whole pool, so after a database restart one request fails UNAVAILABLE (and is retried
        # with its idempotency key) and the next ones get fresh connections.
        pool_pre_ping=False,
        connect_args={
            "server_settings": {
                "statement_timeout": str(timeouts.statement_ms),
                "lock_timeout": str(timeouts.lock_ms),
                "idle_in_transaction_session_timeout": str(timeouts.idle_in_transaction_ms),
                "application_name": "meter",
            }
        },
    )


def driver_error(exc: BaseException) -> BaseException:
    """The asyncpg exception under SQLAlchemy's wrapping (or `exc` itself, raised by asyncpg)."""
    original = getattr(exc, "orig", None)
    if original is None:
        return exc
    return original.__cause__ or original


def sqlstate(exc: BaseException) -> str | None:
    return getattr(driver_error(exc), "sqlstate", None)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, Conflict) or sqlstate(exc) in RETRYABLE_SQLSTATES


def _protocol_broken(exc: BaseException) -> bool:
    """asyncpg's answer when the server went away mid-statement (MagicStack/asyncpg #1069): the
    protocol state is unknown, so the connection must never be used again."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, asyncpg.InternalClientError):
            return True
        cause = getattr(cause, "orig", None) or cause.__cause__
    return False


def _unavailable(exc: BaseException) -> bool:
    """Lost connections, timeouts, no connection free and a database that is down: the caller
    should retry later. The one list, whether SQLAlchemy or asyncpg raised it."""
    if isinstance(exc, (PoolTimeout, TimeoutError, OperationalError, InterfaceError)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    cause = driver_error(exc)
    if isinstance(cause, (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)) or _protocol_broken(exc):
        return True
    return unavailable_sqlstate(sqlstate(exc))


def unavailable_sqlstate(state: str | None) -> bool:
    """57014 query_canceled (statement_timeout), 55P03 lock_not_available (lock_timeout), class 08
    connection exceptions, 57P0x admin shutdown / crash shutdown."""
    state = state or ""
    return state in ("57014", "55P03") or state.startswith(("08", "57P"))


async def with_retries(once: Callable[[], Awaitable[T]], attempts: int) -> T:
    """Run `once` again on serialization failures, deadlocks and lost races (the same work can then
    succeed); report what means "try later" as StorageUnavailable; let anything else through.

    The first attempt runs outside tenacity: setting up its retry loop cost about 85 microseconds of
    CPU per call (two per model call), for the rare call that fails. A first failure worth a retry
    enters the loop as its first attempt, so that tenacity still waits and counts as before."""
    try:
        try:
            return await once()
        except Exception as exc:
            if not _retryable(exc):
                raise
            first_failure: list[BaseException] = [exc]

        async def again() -> T:
            if first_failure:
                raise first_failure.pop()
            return await once()

        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=0.002, max=0.1),
            reraise=True,
        ):
            with attempt:
                return await again()
    except Exception as exc:
        if _unavailable(exc):
            reason = "no database connection free in time" if isinstance(exc, (PoolTimeout, TimeoutError)) else None
            raise StorageUnavailable(reason or type(driver_error(exc)).__name__) from exc
        raise
    raise AssertionError("unreachable: tenacity reraises the last failure")


async def run_transaction(
    engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]], *, attempts: int = 8
) -> T:
    """Run `work` in one transaction that commits only if it returns; retry retryable failures."""

    async def once() -> T:
        async with engine.connect() as connection:
            try:
                async with connection.begin():
                    return await work(connection)
            except DBAPIError as exc:
                if _protocol_broken(exc):
                    await connection.invalidate(exc)  # closed, never back to the pool
                raise

    return await with_retries(once, attempts)


async def run_statement(engine: AsyncEngine, sql: str, *args: Any, attempts: int = 8) -> asyncpg.Record:
    """Run one statement (a hot-path function: its own transaction) on the pool's asyncpg
    connection itself (AsyncEngine.raw_connection), with its prepared-statement cache and none of
    SQLAlchemy's per-statement work; the same pool, retries and error mapping as run_transaction."""
    return await _on_a_pooled_connection(engine, lambda driver: driver.fetchrow(sql, *args), attempts)


async def run_statement_rows(engine: AsyncEngine, sql: str, *args: Any, attempts: int = 8) -> list[asyncpg.Record]:
    """run_statement for a function that answers with several rows (a coalesced batch's)."""
    return await _on_a_pooled_connection(engine, lambda driver: driver.fetch(sql, *args), attempts)


async def _on_a_pooled_connection(
    engine: AsyncEngine, call: Callable[[asyncpg.Connection], Awaitable[T]], attempts: int
) -> T:
    async def once() -> T:
        # The pool's connection itself, without a Connection around it: engine.connect() cost about
        # 110 microseconds of CPU more per statement (two greenlet switches and its bookkeeping).
        raw = await engine.raw_connection()
        try:
            return await call(raw.driver_connection)
        except (asyncpg.InternalClientError, asyncpg.InterfaceError, OSError, asyncio.CancelledError) as exc:
            # Broken, or cancelled mid-statement (a caller's deadline): its state is unknown, so it is
            # closed and never goes back to the pool.
            raw.invalidate(exc if isinstance(exc, Exception) else None)
            raise
        finally:
            raw.close()

    return await with_retries(once, attempts)
