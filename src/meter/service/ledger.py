"""ListLedgerEntries: an account's ledger, newest first, a page at a time."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from meter.domain import ids, pages
from meter.domain.errors import AccountNotFound, InvalidField
from meter.domain.ledger import EntryKind, RecordedEntry
from meter.service.context import Meter
from meter.service.ports import Store

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
PAGE_TOKEN_KEY = "page_token_key"


@dataclass(frozen=True)
class Page:
    entries: list[RecordedEntry]
    next_page_token: str


async def list_entries(
    meter: Meter,
    *,
    account_id: str,
    page_size: int = 0,
    page_token: str = "",
    kind: EntryKind | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Page:
    ids.account_id(account_id)
    size = pages.page_size("page_size", page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
    if start and end and start >= end:
        raise InvalidField("to", "must be after from")
    listing = pages.Cursor(
        account_id,
        kind.value if kind else "",
        start.isoformat() if start else "",
        end.isoformat() if end else "",
        after=0,
    )

    async def work(store: Store) -> Page:
        key = await store.secret(PAGE_TOKEN_KEY)
        after = pages.decode(page_token, key, listing) if page_token else None
        account, _ = await store.account_state(account_id)
        if account is None:
            raise AccountNotFound(account_id)
        found = await store.ledger_page(
            account_id, before_entry=after, limit=size + 1, kind=kind.value if kind else None, start=start, end=end
        )
        entries = found[:size]
        more = len(found) > size
        token = pages.encode(replace(listing, after=entries[-1].entry_id), key) if more else ""
        return Page(entries, token)

    return await meter.storage.transaction(work)
