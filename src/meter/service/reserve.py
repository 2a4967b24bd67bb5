"""Reserve: hold the worst case of a model call, atomically with checking it fits.

The database decides (meter_reserve, storage/sql); this validates the request, prices it with the
catalog, and turns a refusal into its error.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from meter import metrics
from meter.domain.answers import Outcome, Reserved
from meter.domain.balance import Balance
from meter.domain.errors import (
    AccountInDebt,
    AccountNotFound,
    BudgetExceeded,
    InsufficientTokens,
    RateLimited,
    RequestIdReused,
)
from meter.domain.holds import HoldStatus, hold_ttl_seconds, reserve_params
from meter.service import balance_warnings
from meter.service.context import Meter, Parameters


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    held_tokens: int
    expires_at: datetime
    catalog_version: str
    status: HoldStatus
    balance: Balance
    new: bool = True  # False: the answer to a replayed request_id


def bounded_ttl_seconds(value: int, parameters: Parameters, field: str = "ttl_seconds") -> int:
    return hold_ttl_seconds(
        value, default_seconds=parameters.default_ttl_seconds, max_seconds=parameters.max_ttl_seconds, field=field
    )


async def reserve(
    meter: Meter,
    *,
    account_id: str,
    request_id: str,
    model: str,
    input_tokens: int,
    max_output_tokens: int,
    ttl_seconds: int = 0,
    labels: dict[str, str] | None = None,
) -> Reservation:
    params = reserve_params(
        account_id=account_id,
        request_id=request_id,
        model=model,
        input_tokens=input_tokens,
        max_output_tokens=max_output_tokens,
        ttl_seconds=ttl_seconds,
        labels=labels or {},
        default_ttl_seconds=meter.parameters.default_ttl_seconds,
        max_ttl_seconds=meter.parameters.max_ttl_seconds,
    )
    pricing = meter.catalog.pricing(model, params.labels)
    # Concurrent Reserves of one account start at different rows.
    start = meter.spread.randrange(1 << 15)
    answer = await meter.storage.hot_path.reserve(account_id, request_id, params, pricing, start)
    if answer.across:
        metrics.RESERVES_ACROSS_ROWS.inc()
    reservation = _reservation(account_id, request_id, answer)
    if reservation.new:
        metrics.TOKENS_HELD.inc(reservation.held_tokens)
    await balance_warnings.announce(meter, reservation.balance)
    return reservation


def _reservation(account_id: str, request_id: str, answer: Reserved) -> Reservation:
    balance = answer.balance
    if answer.outcome is Outcome.ACCOUNT_NOT_FOUND or balance is None:
        raise AccountNotFound(account_id)
    if answer.outcome is Outcome.REQUEST_REUSED:
        raise RequestIdReused(request_id, answer.reused_field)
    if answer.outcome is Outcome.IN_DEBT:
        raise AccountInDebt(balance.debt)
    if answer.outcome is Outcome.RATE_LIMITED:
        assert answer.refusal is not None
        raise RateLimited(answer.refusal.limit, answer.refusal.value, answer.refusal.retry_after)
    if answer.outcome is Outcome.BUDGET_EXCEEDED:
        assert answer.budget_refusal is not None
        refused = answer.budget_refusal
        raise BudgetExceeded(refused.key.label_key, refused.key.label_value, refused.unit, refused.cap,
                             refused.remaining, refused.required)  # fmt: skip
    if answer.outcome is Outcome.INSUFFICIENT:
        raise InsufficientTokens(available=balance.allowance_remaining + balance.purchased_remaining,
                                 required=answer.required)  # fmt: skip
    assert answer.outcome in (Outcome.PLACED, Outcome.REPLAYED), answer.outcome
    assert answer.expires_at is not None
    return Reservation(
        reservation_id=answer.reservation_id,
        held_tokens=answer.held_tokens,
        expires_at=answer.expires_at,
        catalog_version=answer.catalog_version,
        status=answer.status,
        balance=balance,
        new=answer.outcome is Outcome.PLACED,
    )
