"""ListEvents and WatchEvents: an account's balance events after a sequence number, oldest first,
a page at a time or as they happen.

Watchers share the process, and its database pool, with Reserve and Commit: fifty replaying
history at once held the pool (`meter bench --watchers`). Their reads take turns
(meter.watch_reads, METER_WATCH_READS at once, never holding a turn while events are sent): a
replay goes slower when many run, and Reserve and Commit find connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from meter.domain import ids, pages
from meter.domain.balance_events import BalanceEvent, EventPage, EventPosition
from meter.domain.errors import AccountNotFound, InvalidField
from meter.service.context import Meter
from meter.service.ports import ALL_ACCOUNTS, Store

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# A watcher reads again this often whatever it heard: notices are hints, and one lost with a
# connection must delay an event, never lose it.
POLL_SECONDS = 2.0


async def list_events(meter: Meter, *, account_id: str, after_sequence: int = 0, page_size: int = 0) -> EventPage:
    """The sequence numbers are the cursor: an event's number never changes and none is skipped,
    so a reader that sends the last one it saw misses nothing and sees nothing twice."""
    ids.account_id(account_id)
    size = pages.page_size("page_size", page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
    if after_sequence < 0:
        raise InvalidField("after_sequence", "must be 0 or more")

    async def work(store: Store) -> EventPage:
        account, _ = await store.account_state(account_id)
        if account is None:
            raise AccountNotFound(account_id)
        found = await store.events_after(account_id, after_sequence, size + 1)
        events = found[:size]
        return EventPage(events, events[-1].sequence if events else after_sequence, more=len(found) > size)

    return await meter.storage.transaction(work)


async def watch_events(
    meter: Meter, *, account_id: str, after_sequence: int = 0, after_position: str = "", until: asyncio.Event
) -> AsyncIterator[BalanceEvent]:
    """The events after `after_sequence`, then each new one as its change commits (told by the
    database's notices, on whichever replica made it), until `until` is set or the caller goes
    away. Subscribed before each read, so an event committed during a read is heard of, not
    missed. Without an account: every account's, after `after_position`."""
    if not account_id:
        if after_sequence:
            raise InvalidField("after_sequence", "counts one account's events: give account_id, or after_position")
        async for event in _watch_all(meter, after_position, until):
            yield event
        return
    if after_position:
        raise InvalidField("after_position", "applies to every account's events: leave account_id empty")
    notices = meter.storage.notices
    async with notices.subscription(account_id) as heard:
        while not until.is_set():
            heard.clear()
            async with meter.watch_reads:
                page = await list_events(
                    meter, account_id=account_id, after_sequence=after_sequence, page_size=MAX_PAGE_SIZE
                )
            for event in page.events:
                yield event
            after_sequence = page.last_sequence
            if page.more:
                continue
            await notices.listen()  # again, after a lost connection
            await _first(heard, until, within=POLL_SECONDS)


async def _watch_all(meter: Meter, after_position: str, until: asyncio.Event) -> AsyncIterator[BalanceEvent]:
    """Positions follow the writing transactions' ids, not commit order: an event is read only
    once every older transaction has ended (storage's events_after_position), so a watcher that
    resumes after the last position it was sent misses nothing. A notice may come before that
    (an older transaction still running): the next read, at most POLL_SECONDS later, finds it."""
    after = EventPosition.parse(after_position) if after_position else None
    notices = meter.storage.notices

    async def read(store: Store) -> list[BalanceEvent]:
        return await store.events_after_position(after, MAX_PAGE_SIZE)

    async with notices.subscription(ALL_ACCOUNTS) as heard:
        while not until.is_set():
            heard.clear()
            async with meter.watch_reads:
                found = await meter.storage.transaction(read)
            for event in found:
                yield event
            if found:
                after = found[-1].position
            if len(found) == MAX_PAGE_SIZE:
                continue
            await notices.listen()
            await _first(heard, until, within=POLL_SECONDS)


async def _first(*signals: asyncio.Event, within: float) -> None:
    """Return when one of `signals` is set, or after `within` seconds."""
    waits = [asyncio.ensure_future(signal.wait()) for signal in signals]
    try:
        await asyncio.wait(waits, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
