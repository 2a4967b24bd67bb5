"""Adjust: an operator's tokens in (and, for corrections, out), each exactly once by its request_id
(CreditPurchase is service/purchases.py)."""

from __future__ import annotations

from meter.domain import ids
from meter.domain.balance import Balance
from meter.domain.balance_events import EventType
from meter.domain.credits import Adjustment
from meter.domain.errors import AccountNotFound, InsufficientTokens, InvalidField, RequestIdReused
from meter.domain.pools import PoolName
from meter.service import balance_warnings
from meter.service.accounts import locked_current_account
from meter.service.context import Meter
from meter.service.ports import Conflict, Store

MAX_REASON_LENGTH = 500


async def adjust(meter: Meter, *, account_id: str, pool: PoolName, delta: int, reason: str, request_id: str) -> Balance:
    ids.account_id(account_id)
    ids.idempotency_key(request_id, "request_id")
    if pool is PoolName.DEBT:
        raise InvalidField("pool", "must be POOL_ALLOWANCE or POOL_PURCHASED")
    limit = meter.parameters.max_credit_tokens
    if delta == 0 or abs(delta) > limit:
        raise InvalidField("delta", f"must be non-zero and at most {limit} tokens either way")
    if not reason.strip() or len(reason) > MAX_REASON_LENGTH:
        raise InvalidField("reason", f"is required, at most {MAX_REASON_LENGTH} characters")
    adjustment = Adjustment(account_id, request_id, pool, delta, reason)

    async def work(store: Store) -> Balance:
        account, now = await store.account_state(account_id)
        if account is None:
            raise AccountNotFound(account_id)
        existing = await store.adjustment(account_id, request_id)
        if existing is not None:
            if (differing := existing.differing_field(adjustment)) is not None:
                raise RequestIdReused(request_id, differing)
            return await store.balance(account_id)
        if not await store.insert_adjustment(adjustment, now):
            raise Conflict("the same adjustment was applied concurrently")
        await locked_current_account(store, account, now)
        # A correction takes only what the pool has available: it never creates debt by itself.
        available = await store.adjust(account_id, pool, delta, now, ref=request_id, note=reason)
        if available is not None:
            raise InsufficientTokens(available=available, required=-delta)
        await store.emit(
            account_id,
            EventType.ADJUSTED,
            {"pool": pool.value, "delta": delta, "reason": reason, "request_id": request_id},
            now,
        )
        return await store.balance(account_id)

    balance = await meter.storage.transaction(work)
    await balance_warnings.announce(meter, balance)
    return balance
