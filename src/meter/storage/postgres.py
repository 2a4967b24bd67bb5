"""The Storage port on Postgres: a transaction per unit of work, with a fresh store; the hot path's
one-statement calls. Both on the one pool of the engine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from meter.service.ports import Store
from meter.storage.clock import DatabaseClock
from meter.storage.engine import run_transaction
from meter.storage.event_notices import EventNotices
from meter.storage.hot_path import HotPath
from meter.storage.store import PostgresStore

T = TypeVar("T")


class PostgresStorage:
    def __init__(self, engine: AsyncEngine, hot_path: HotPath, clock: DatabaseClock) -> None:
        self.engine = engine
        self._hot_path = hot_path
        self.clock = clock
        self._notices = EventNotices(engine.url.render_as_string(hide_password=False))

    @property
    def notices(self) -> EventNotices:
        return self._notices

    @property
    def hot_path(self) -> HotPath:
        return self._hot_path

    async def transaction(self, work: Callable[[Store], Awaitable[T]]) -> T:
        async def unit(connection: AsyncConnection) -> T:
            return await work(PostgresStore(connection, self.clock))

        return await run_transaction(self.engine, unit)
