"""Notices of committed balance events, for this process's watchers (WatchEvents).

meter_emit sends a notice on channel meter_balance_events with the account id; PostgreSQL delivers
it when the change commits, to every connection listening, so a watcher on any replica hears of
an event as soon as it exists. One connection per process listens (outside the pool: it is held
for as long as anyone watches). Notices are a hint, never the record: a watcher reads the events
themselves, and reads again every `poll_seconds` whatever it heard, so a notice lost with a
connection delays an event by at most that, and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg

from meter.service.ports import ALL_ACCOUNTS
from meter.storage.engine import dsn

CHANNEL = "meter_balance_events"

log = logging.getLogger(__name__)


class EventNotices:
    def __init__(self, url: str) -> None:
        self._url = url
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._connection: asyncpg.Connection | None = None
        self._connecting = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def subscription(self, account_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set by every notice for `account_id` (ALL_ACCOUNTS: for any) while the block
        runs (the watcher clears it before each read, so that a notice arriving during the read is
        not lost)."""
        heard = asyncio.Event()
        self._waiters.setdefault(account_id, set()).add(heard)
        try:
            await self.listen()
            yield heard
        finally:
            waiters = self._waiters.get(account_id, set())
            waiters.discard(heard)
            if not waiters:
                self._waiters.pop(account_id, None)

    async def listen(self) -> None:
        """Listen, unless already listening; when the database cannot be reached, watchers poll."""
        if self._connection is not None and not self._connection.is_closed():
            return
        async with self._connecting:
            if self._connection is not None and not self._connection.is_closed():
                return
            try:
                connection = await asyncpg.connect(dsn(self._url), timeout=5)
                await connection.add_listener(CHANNEL, self._notice)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("balance event notices unavailable (%s): watchers poll until they are back", exc)
                return
            self._connection = connection

    def _notice(self, connection: object, pid: int, channel: str, account_id: str) -> None:
        for heard in (*self._waiters.get(account_id, ()), *self._waiters.get(ALL_ACCOUNTS, ())):
            heard.set()

    async def close(self) -> None:
        if self._connection is not None and not self._connection.is_closed():
            await self._connection.close()
        self._connection = None
