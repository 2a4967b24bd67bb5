"""ListOpenReservations: what an account has on hold right now, and until when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from meter.domain import ids, pages
from meter.domain.errors import AccountNotFound
from meter.domain.holds import Hold
from meter.service.context import Meter
from meter.service.ports import Store

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@dataclass(frozen=True)
class OpenReservation:
    hold: Hold
    created_at: datetime


@dataclass(frozen=True)
class OpenReservations:
    reservations: list[OpenReservation]
    open_count: int


async def list_open(meter: Meter, *, account_id: str, limit: int = 0) -> OpenReservations:
    ids.account_id(account_id)
    size = pages.page_size("limit", limit, default=DEFAULT_LIMIT, maximum=MAX_LIMIT)

    async def work(store: Store) -> OpenReservations:
        account, _ = await store.account_state(account_id)
        if account is None:
            raise AccountNotFound(account_id)
        holds, count = await store.open_holds(account_id, size)
        return OpenReservations([OpenReservation(hold, created) for hold, created in holds], count)

    return await meter.storage.transaction(work)
