"""ListEvents: an account's balance events after a sequence number, oldest first."""

from __future__ import annotations

from meter.domain import ids, pages
from meter.domain.balance_events import EventPage
from meter.domain.errors import AccountNotFound, InvalidField
from meter.service.context import Meter
from meter.service.ports import Store

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


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
