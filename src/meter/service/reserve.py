"""Reserve: hold the worst case of a model call, atomically with checking it fits."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from meter import metrics
from meter.domain import ids
from meter.domain import limits as rate_limits
from meter.domain.accounts import Account
from meter.domain.amounts import MAX_CALL_TOKENS, require_tokens
from meter.domain.balance import Balance
from meter.domain.errors import AccountInDebt, AccountNotFound, InsufficientTokens, InvalidField
from meter.domain.holds import Hold, HoldStatus, NotPlaced, ReserveParams
from meter.domain.limits import RateLimits
from meter.domain.pools import PoolName, draw, find_row, pool_total, rebalance
from meter.service import balance_warnings
from meter.service.context import Limits, Meter
from meter.service.periods import roll_over_if_ended
from meter.service.ports import Conflict, Store

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # placeholder times of a draft hold, set by storage

MAX_LABELS = 32
MAX_LABEL_LENGTH = 256


@dataclass(frozen=True)
class Reservation:
    hold: Hold
    balance: Balance
    new: bool = True  # False: the answer to a replayed request_id


@dataclass(frozen=True)
class _Parts:
    allowance: int
    purchased: int
    allowance_bucket: int
    purchased_bucket: int


def ttl_seconds(value: int, limits: Limits, field: str = "ttl_seconds") -> int:
    if value == 0:
        return limits.default_ttl_seconds
    if value < 0 or value > limits.max_ttl_seconds:
        raise InvalidField(field, f"must be between 1 and {limits.max_ttl_seconds} seconds (0: default)")
    return value


def _labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise InvalidField("labels", f"at most {MAX_LABELS} labels")
    for key, value in labels.items():
        if not key or len(key) > MAX_LABEL_LENGTH or len(value) > MAX_LABEL_LENGTH:
            raise InvalidField("labels", f"keys (non-empty) and values are at most {MAX_LABEL_LENGTH} characters")
    return dict(labels)


async def reserve(
    meter: Meter,
    *,
    account_id: str,
    request_id: str,
    model: str,
    input_tokens: int,
    max_output_tokens: int,
    ttl: int = 0,
    labels: dict[str, str] | None = None,
) -> Reservation:
    ids.account_id(account_id)
    ids.idempotency_key(request_id, "request_id")
    params = ReserveParams(
        model=model,
        input_tokens=require_tokens("input_tokens", input_tokens, minimum=0, maximum=MAX_CALL_TOKENS),
        max_output_tokens=require_tokens("max_output_tokens", max_output_tokens, minimum=1, maximum=MAX_CALL_TOKENS),
        ttl_seconds=ttl_seconds(ttl, meter.limits),
        labels=_labels(labels or {}),
    )
    pricing = meter.catalog.pricing(model)
    required = max(1, pricing.tokens(params.input_tokens, params.max_output_tokens))
    start = meter.spread.randrange(1 << 15)
    # The common case in one round trip; anything else (a replay, a boundary, debt, tokens spread
    # over several buckets, refusals) goes through the general path below.
    draft = Hold(
        account_id=account_id,
        reservation_id=ids.new_reservation_id(account_id),
        request_id=request_id,
        params=params,
        pricing=pricing,
        allowance_held=required,
        allowance_bucket=0,
        purchased_held=0,
        purchased_bucket=0,
        period_start=_EPOCH,
        status=HoldStatus.OPEN,
        expires_at=_EPOCH,
    )
    fast = await meter.storage.reserve_fast(draft, start)
    if not isinstance(fast, NotPlaced):
        reservation = Reservation(*fast)
        metrics.TOKENS_HELD.inc(reservation.hold.held_tokens)
        await balance_warnings.announce(meter, reservation.balance)
        return reservation
    metrics.GENERAL_RESERVES.inc()

    async def work(store: Store) -> Reservation:
        account, now = await store.account_state(account_id)
        if account is None:
            raise AccountNotFound(account_id)
        existing = await store.hold_by_request(account_id, request_id)
        if existing is not None:
            existing.check_replay(params)
            return Reservation(existing, await store.balance(account_id), new=False)
        account = await roll_over_if_ended(store, account, now)
        if account.debt:
            raise AccountInDebt(account.debt)
        limits = account.limits.over(meter.catalog.plan_limits(account.plan_id))
        if limits.any and not fast.limits_checked:
            await _check_limits(store, account_id, limits, required, now, meter.limits.sweep_seconds)
        parts = await _hold_tokens(store, account, required, start)
        hold = Hold(
            account_id=account_id,
            reservation_id=ids.new_reservation_id(account_id),
            request_id=request_id,
            params=params,
            pricing=pricing,
            allowance_held=parts.allowance,
            allowance_bucket=parts.allowance_bucket,
            purchased_held=parts.purchased,
            purchased_bucket=parts.purchased_bucket,
            period_start=account.period.start,
            status=HoldStatus.OPEN,
            expires_at=_expiry(now, params.ttl_seconds),
        )
        if not await store.insert_hold(hold, now):
            raise Conflict("a concurrent Reserve with this request_id committed first")
        return Reservation(hold, await store.balance(account_id))

    reservation = await meter.storage.transaction(work)
    if reservation.new:
        metrics.TOKENS_HELD.inc(reservation.hold.held_tokens)
    await balance_warnings.announce(meter, reservation.balance)
    return reservation


async def _check_limits(
    store: Store, account_id: str, limits: RateLimits, amount: int, now: datetime, sweep_seconds: float
) -> None:
    """Refuse a Reserve over the account's limits (RATE_LIMITED with a retry delay). The soonest
    expiry, which only a refusal for open holds needs, is read only then."""
    usage = await store.rate_usage(account_id, now)
    holds = limits.concurrent_holds
    if holds is not None and usage.open_holds + 1 > holds:
        usage = replace(usage, soonest_expiry=await store.soonest_open_expiry(account_id))
    rate_limits.check(limits, usage, amount, now, sweep_seconds)


def _expiry(now: datetime, ttl: int) -> datetime:
    return now + timedelta(seconds=ttl)


async def _hold_tokens(store: Store, account: Account, amount: int, start: int) -> _Parts:
    """Take `amount` allowance-first: from one unlocked bucket when one has it (one row lock, no
    waiting), else from all buckets locked in order (exact: refuses only what truly does not fit)."""
    n = account.bucket_count
    first = start % n
    bucket = await store.hold_in_one_bucket(account.account_id, PoolName.ALLOWANCE, amount, first, n)
    if bucket is not None:
        return _Parts(allowance=amount, purchased=0, allowance_bucket=bucket, purchased_bucket=first)
    if await store.pool_available(account.account_id, PoolName.ALLOWANCE) == 0:
        bucket = await store.hold_in_one_bucket(account.account_id, PoolName.PURCHASED, amount, first, n)
        if bucket is not None:
            return _Parts(allowance=0, purchased=amount, allowance_bucket=first, purchased_bucket=bucket)
    return await _hold_across_buckets(store, account, amount, first)


async def _hold_across_buckets(store: Store, account: Account, amount: int, bucket: int) -> _Parts:
    rows = await store.lock_buckets(account.account_id)
    allowance, purchased = pool_total(rows, PoolName.ALLOWANCE), pool_total(rows, PoolName.PURCHASED)
    taken = draw(amount, allowance, purchased)
    if taken.shortfall:
        raise InsufficientTokens(available=allowance + purchased, required=amount)
    # Having every row locked anyway, even the pools out again so the next holds fit one bucket.
    rebalance(rows, PoolName.ALLOWANCE, allowance - taken.allowance)
    rebalance(rows, PoolName.PURCHASED, purchased - taken.purchased)
    find_row(rows, PoolName.ALLOWANCE, bucket).held += taken.allowance
    find_row(rows, PoolName.PURCHASED, bucket).held += taken.purchased
    await store.write_buckets(account.account_id, rows)
    return _Parts(
        allowance=taken.allowance, purchased=taken.purchased, allowance_bucket=bucket, purchased_bucket=bucket
    )
