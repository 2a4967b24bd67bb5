"""ExtendReservation: keep a long stream's hold alive."""

from __future__ import annotations

from datetime import datetime, timedelta

from meter.domain import ids
from meter.domain.errors import ReservationNotFound
from meter.service.context import Meter
from meter.service.ports import Store
from meter.service.reserve import ttl_seconds


async def extend(meter: Meter, *, reservation_id: str, ttl: int) -> datetime:
    account_id = ids.reservation_account(reservation_id)
    seconds = ttl_seconds(ttl, meter.limits)

    async def work(store: Store) -> datetime:
        hold, now = await store.lock_hold(account_id, ids.hold_id(reservation_id))
        if hold is None:
            raise ReservationNotFound(reservation_id)
        hold.check_extendable(now)
        expires_at = now + timedelta(seconds=seconds)
        await store.extend_hold(hold, expires_at)
        return expires_at

    return await meter.storage.transaction(work)
