"""The Storage port on Postgres: a transaction per unit of work, with a fresh store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from meter.service.ports import Store
from meter.storage.clock import DatabaseClock
from meter.storage.database import run_transaction
from meter.storage.store import PostgresStore

T = TypeVar("T")


class PostgresStorage:
    def __init__(self, engine: AsyncEngine, clock: DatabaseClock | None = None) -> None:
        self.engine = engine
        self.clock = clock or DatabaseClock()

    async def transaction(self, work: Callable[[Store], Awaitable[T]]) -> T:
        async def unit(connection: AsyncConnection) -> T:
            return await work(PostgresStore(connection, self.clock))

        return await run_transaction(self.engine, unit)

    async def single_statement(self, work: Callable[[Store], Awaitable[T]]) -> T:
        """Run `work`, which issues exactly one statement, as that statement's own transaction."""

        async def unit(connection: AsyncConnection) -> T:
            return await work(PostgresStore(connection, self.clock))

        return await run_transaction(self.engine, unit, autocommit=True)
