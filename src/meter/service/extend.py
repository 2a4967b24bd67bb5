"""ExtendReservation: keep a long stream's hold alive (decided by meter_extend, storage/sql)."""

from __future__ import annotations

from datetime import datetime

from meter.domain import ids
from meter.domain.answers import Outcome
from meter.domain.errors import ReservationCommitted, ReservationExpired, ReservationNotFound, ReservationReleased
from meter.service.context import Meter
from meter.service.reserve import bounded_ttl_seconds

_REFUSALS = {
    Outcome.NOT_FOUND: ReservationNotFound,
    Outcome.COMMITTED: ReservationCommitted,
    Outcome.RELEASED: ReservationReleased,
    Outcome.EXPIRED: ReservationExpired,
}


async def extend(meter: Meter, *, reservation_id: str, ttl_seconds: int) -> datetime:
    ids.reservation_account(reservation_id)
    answer = await meter.storage.hot_path.extend(reservation_id, bounded_ttl_seconds(ttl_seconds, meter.parameters))
    refusal = _REFUSALS.get(answer.outcome)
    if refusal is not None:
        raise refusal(reservation_id)
    assert answer.outcome is Outcome.EXTENDED and answer.expires_at is not None, answer.outcome
    return answer.expires_at
