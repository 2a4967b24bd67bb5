"""The base of the store's query groups: one connection, the clock, and three ways to run SQL."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from meter.storage.clock import DatabaseClock

# The one clock: the database's now(), moved by the test clock's offset.
NOW = "now() + make_interval(secs => :clock_offset)"


class Queries:
    def __init__(self, connection: AsyncConnection, clock: DatabaseClock) -> None:
        self._db = connection
        self._clock = clock

    async def _rows(self, sql: str, **params: Any) -> list[Mapping[str, Any]]:
        result = await self._db.execute(text(sql), {"clock_offset": self._clock.offset_seconds, **params})
        return cast(list[Mapping[str, Any]], list(result.mappings().all()))

    async def _row(self, sql: str, **params: Any) -> Mapping[str, Any] | None:
        rows = await self._rows(sql, **params)
        return rows[0] if rows else None

    async def _execute(self, sql: str, **params: Any) -> int:
        result = await self._db.execute(text(sql), {"clock_offset": self._clock.offset_seconds, **params})
        return result.rowcount

    async def now(self) -> datetime:
        row = await self._row(f"SELECT {NOW} AS now")
        assert row is not None
        return cast(datetime, row["now"])
