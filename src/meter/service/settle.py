"""Commit, Release and expiry: how a hold ends, exactly once.

The database decides (meter_commit, meter_release, meter_expire and the meter_settle they share,
storage/sql), under the hold's row lock, so a Commit racing a Release (or the sweeper) sees the
other's outcome; this validates the request and turns a refusal into its error.
"""

from __future__ import annotations

from dataclasses import dataclass

from meter import metrics
from meter.domain import ids
from meter.domain.accounts import Account
from meter.domain.amounts import MAX_CALL_TOKENS, require_tokens
from meter.domain.answers import Charged, Outcome
from meter.domain.balance import Balance
from meter.domain.errors import (
    AccountNotFound,
    RequestIdReused,
    ReservationCommitted,
    ReservationNotFound,
    ReservationReleased,
)
from meter.domain.holds import CallTokens, CallUsage, ExpiredHolds, Usage, call_labels
from meter.service import balance_warnings, budget_warnings
from meter.service.context import Meter
from meter.service.ports import Accounts


@dataclass(frozen=True)
class Charge:
    usage: Usage
    balance: Balance
    new: bool = True  # False: the answer to a replayed Commit


def call_tokens(tokens: CallTokens) -> CallTokens:
    """A call's usage (Commit's and ChargeUsage's): each class a count of tokens one call can use."""
    for name in ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens"):
        require_tokens(name, getattr(tokens, name), minimum=0, maximum=MAX_CALL_TOKENS)
    return tokens


async def commit(meter: Meter, *, reservation_id: str, tokens: CallTokens) -> Charge:
    ids.reservation_account(reservation_id)  # a malformed id is refused before any query
    call_tokens(tokens)
    answer = await meter.storage.hot_path.commit(reservation_id, tokens)
    if answer.outcome is Outcome.NOT_FOUND or answer.balance is None:
        raise ReservationNotFound(reservation_id)
    if answer.outcome is Outcome.USAGE_REUSED:
        raise RequestIdReused(reservation_id, answer.reused_field)
    if answer.outcome is Outcome.RELEASED:
        raise ReservationReleased(reservation_id)
    return await _charged(meter, answer, tokens)


async def _charged(meter: Meter, answer: Charged, tokens: CallTokens) -> Charge:
    """A Commit's or ChargeUsage's answer, counted once and announced (its warning levels)."""
    assert answer.outcome in (Outcome.COMMITTED, Outcome.REPLAYED), answer.outcome
    assert answer.balance is not None
    usage = Usage(
        tokens=tokens,
        charged_tokens=answer.charged_tokens,
        cost_micros=answer.cost_micros,
        unbilled_tokens=answer.unbilled_tokens,
        late=answer.late,
    )
    charge = Charge(usage, answer.balance, new=answer.outcome is Outcome.COMMITTED)
    if charge.new:
        metrics.TOKENS_CHARGED.inc(usage.charged_tokens)
    await balance_warnings.announce(meter, charge.balance)
    if charge.new:
        await budget_warnings.announce(meter, answer.balance.account_id, answer.budgets)
    return charge


@dataclass(frozen=True)
class UnheldCharge:
    reservation_id: str
    charge: Charge


async def charge_usage(
    meter: Meter,
    *,
    account_id: str,
    request_id: str,
    model: str,
    tokens: CallTokens,
    labels: dict[str, str] | None = None,
) -> UnheldCharge:
    """A call that had no hold (let through while meter was unreachable), charged once: from what
    is available, debt for the rest, never refused for lack of tokens."""
    ids.account_id(account_id)
    ids.idempotency_key(request_id, "request_id")
    usage = CallUsage(model=model, tokens=call_tokens(tokens), labels=call_labels(labels or {}))
    pricing = meter.catalog.pricing(model, usage.labels)
    answer = await meter.storage.hot_path.charge_usage(account_id, request_id, usage, pricing)
    if answer.outcome is Outcome.ACCOUNT_NOT_FOUND or answer.balance is None:
        raise AccountNotFound(account_id)
    if answer.outcome is Outcome.REQUEST_REUSED:
        raise RequestIdReused(request_id, answer.reused_field)
    return UnheldCharge(answer.reservation_id, await _charged(meter, answer, tokens))


async def release(meter: Meter, *, reservation_id: str) -> Balance:
    ids.reservation_account(reservation_id)  # a malformed id is refused before any query
    answer = await meter.storage.hot_path.release(reservation_id)
    if answer.outcome is Outcome.NOT_FOUND or answer.balance is None:
        raise ReservationNotFound(reservation_id)
    if answer.outcome is Outcome.COMMITTED:
        raise ReservationCommitted(reservation_id)
    assert answer.outcome is Outcome.RELEASED, answer.outcome
    return answer.balance


async def expire(meter: Meter, *, account_id: str, hold_id: str) -> bool:
    """Settle one hold past its expiry (the sweeper's job) as the account's expired holds are
    settled: given back, or charged their worst case; False if it was settled meanwhile."""

    async def account_of(store: Accounts) -> Account | None:
        return (await store.account_state(account_id))[0]

    account = await meter.storage.transaction(account_of)
    if account is None:
        return False
    charge = meter.catalog.expired_holds(account) is ExpiredHolds.CHARGE
    answer = await meter.storage.hot_path.expire(account_id, hold_id, charge=charge)
    return answer.outcome in (Outcome.EXPIRED, Outcome.CHARGED)
