"""The Storage port on Postgres: a transaction per unit of work, with a fresh store; the two
hot statements on asyncpg directly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from meter.domain.balance import Balance
from meter.domain.holds import Hold, NotPlaced, Usage
from meter.service.ports import Store
from meter.storage.clock import DatabaseClock
from meter.storage.database import run_transaction
from meter.storage.fast_paths import FastPaths
from meter.storage.store import PostgresStore

T = TypeVar("T")


class PostgresStorage:
    def __init__(self, engine: AsyncEngine, fast: FastPaths, clock: DatabaseClock) -> None:
        self.engine = engine
        self.fast = fast
        self.clock = clock

    async def transaction(self, work: Callable[[Store], Awaitable[T]]) -> T:
        async def unit(connection: AsyncConnection) -> T:
            return await work(PostgresStore(connection, self.clock))

        return await run_transaction(self.engine, unit)

    async def reserve_fast(self, hold: Hold, start: int) -> tuple[Hold, Balance] | NotPlaced:
        return await self.fast.reserve(hold, start)

    async def commit_fast(
        self, account_id: str, hold_id: str, input_tokens: int, output_tokens: int
    ) -> tuple[Usage, Balance] | None:
        return await self.fast.commit(account_id, hold_id, input_tokens, output_tokens)
