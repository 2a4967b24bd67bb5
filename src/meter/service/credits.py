"""CreditPurchase and Adjust: tokens in (and, for corrections, out), each exactly once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from meter import metrics
from meter.domain import ids
from meter.domain.amounts import require_tokens
from meter.domain.balance import Balance
from meter.domain.balance_events import EventType
from meter.domain.checkout import SoldPack
from meter.domain.credits import Adjustment, Purchase, RefusedPurchase
from meter.domain.errors import (
    AccountNotFound,
    InsufficientTokens,
    InvalidField,
    MeterError,
    PurchaseMismatch,
    RequestIdReused,
)
from meter.domain.events import EventStatus, WebhookEvent
from meter.domain.ledger import EntryKind, LedgerEntry
from meter.domain.pools import PoolName
from meter.service import balance_warnings, events, waiting
from meter.service.accounts import credit_pool, free_account, locked_current_account, open_account
from meter.service.context import Meter
from meter.service.ports import Conflict, Store

MAX_REASON_LENGTH = 500
MAX_REF_LENGTH = 255


@dataclass(frozen=True)
class Credited:
    balance: Balance
    tokens: int
    newly_credited: bool
    event_status: EventStatus | None = None


async def credit_purchase(
    meter: Meter,
    *,
    account_id: str,
    pack_id: str,
    tokens: int,
    amount_minor: int,
    currency: str,
    payment_ref: str,
    payment_intent: str = "",
    event_id: str = "",
    source_event: WebhookEvent | None = None,
) -> Credited:
    async def run() -> Credited:
        ids.account_id(account_id)
        ids.idempotency_key(payment_ref, "payment_ref")
        events.check_event(source_event)
        for name, value in (("payment_intent", payment_intent), ("event_id", event_id)):
            if len(value) > MAX_REF_LENGTH:
                raise InvalidField(name, f"at most {MAX_REF_LENGTH} characters")
        session = await meter.storage.transaction(lambda store: store.sold_session(account_id, payment_ref))
        try:
            purchase = _checked_purchase(
                meter,
                session.sold if session else None,
                account_id,
                pack_id,
                tokens,
                amount_minor,
                currency,
                payment_ref,
                payment_intent,
                event_id,
            )
        except MeterError as refusal:
            paid = Purchase(
                account_id,
                payment_ref,
                pack_id[:255],
                tokens,
                amount_minor,
                currency[:16],
                payment_intent or None,
                event_id or None,
            )
            await _refuse(meter, RefusedPurchase(paid, refusal.reason, str(refusal)[:1000]))
            raise
        credited = await meter.storage.transaction(lambda store: _credit(meter, store, purchase, source_event))
        if credited.newly_credited:
            metrics.TOKENS_CREDITED.inc(credited.tokens)
        return credited

    return await events.rejecting(meter, events.event_account(account_id), source_event, run)


async def _credit(meter: Meter, store: Store, purchase: Purchase, source_event: WebhookEvent | None) -> Credited:
    account_id, payment_ref, tokens = purchase.account_id, purchase.payment_ref, purchase.tokens
    account, now = await store.account_state(account_id)
    if account is None:
        account = await open_account(store, free_account(account_id, meter.catalog, now, meter.parameters.buckets), now)
    claimed = await events.claim(store, account_id, source_event, now)
    status = events.status(source_event, claimed)
    existing = await store.purchase(account_id, payment_ref)
    if existing is not None:
        if (differing := existing.differing_field(purchase)) is not None:
            raise RequestIdReused(payment_ref, differing)
        return Credited(await store.balance(account_id), existing.tokens, newly_credited=False, event_status=status)
    if not claimed:
        return Credited(await store.balance(account_id), tokens, newly_credited=False, event_status=status)
    if not await store.insert_purchase(purchase, now):
        raise Conflict("the same payment was credited concurrently")
    await store.mark_session_paid(account_id, payment_ref, now)
    account = await locked_current_account(store, account, now)
    await credit_pool(
        store, account, EntryKind.PURCHASE, PoolName.PURCHASED, tokens, now, ref=payment_ref, note=purchase.pack_id
    )
    await store.emit(
        account_id,
        EventType.PURCHASE_CREDITED,
        {
            "payment_ref": payment_ref,
            "pack_id": purchase.pack_id,
            "tokens": tokens,
            "amount_minor": purchase.amount_minor,
            "currency": purchase.currency,
        },
        now,
    )
    if purchase.payment_intent:  # a refund or dispute that arrived first is applied now
        await waiting.release(meter, store, account_id, waiting.payment_intent_key(purchase.payment_intent), now)
    return Credited(await store.balance(account_id), tokens, newly_credited=True, event_status=status)


async def _refuse(meter: Meter, refused: RefusedPurchase) -> None:
    """A payment the catalog refuses was still taken: it is kept once, for support to refund, and
    told once as purchase.refused (on the account it was bought for, opened if it is new)."""
    purchase = refused.purchase

    async def work(store: Store) -> None:
        account, now = await store.account_state(purchase.account_id)
        if account is None:
            await open_account(
                store, free_account(purchase.account_id, meter.catalog, now, meter.parameters.buckets), now
            )
        elif await store.purchase(purchase.account_id, purchase.payment_ref) is not None:
            return  # credited already, under the catalog it was sold with: nothing was refused
        if not await store.insert_refused_purchase(refused, now):
            return  # refused and told before (a redelivery)
        await store.mark_session_paid(purchase.account_id, purchase.payment_ref, now)
        await store.emit(
            purchase.account_id,
            EventType.PURCHASE_REFUSED,
            {
                "payment_ref": purchase.payment_ref,
                "pack_id": purchase.pack_id,
                "tokens": purchase.tokens,
                "amount_minor": purchase.amount_minor,
                "currency": purchase.currency,
                "reason": refused.reason,
                "message": refused.message,
            },
            now,
        )

    await meter.storage.transaction(work)


def _checked_purchase(
    meter: Meter,
    sold: SoldPack | None,
    account_id: str,
    pack_id: str,
    tokens: int,
    amount_minor: int,
    currency: str,
    payment_ref: str,
    payment_intent: str,
    event_id: str,
) -> Purchase:
    """A purchase is credited only as it was sold: a session meter created, as that session sold it
    (under the catalog version of its sale, whatever the catalog says now); any other, as the
    catalog sells its pack now. Metadata is never trusted."""
    if sold is not None and pack_id != sold.pack_id:
        raise PurchaseMismatch("pack_id", sold.pack_id, pack_id[:255])
    pack = sold or meter.catalog.sold_now(pack_id)
    require_tokens("tokens", tokens, minimum=1, maximum=meter.parameters.max_credit_tokens)
    require_tokens("amount_minor", amount_minor, minimum=0, maximum=2**62)
    if tokens != pack.tokens:
        raise PurchaseMismatch("tokens", pack.tokens, tokens)
    if amount_minor != pack.price_minor:
        raise PurchaseMismatch("amount_minor", pack.price_minor, amount_minor)
    if currency.lower() != pack.currency:
        raise PurchaseMismatch("currency", pack.currency, currency[:16])
    return Purchase(
        account_id, payment_ref, pack_id, tokens, amount_minor, pack.currency, payment_intent or None, event_id or None
    )


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
        account = await locked_current_account(store, account, now)
        if delta > 0:
            await credit_pool(store, account, EntryKind.ADJUSTMENT, pool, delta, now, ref=request_id, note=reason)
        else:
            await _debit(store, account_id, pool, -delta, request_id, reason, now)
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


async def _debit(
    store: Store, account_id: str, pool: PoolName, amount: int, ref: str, note: str, now: datetime
) -> None:
    """A correction takes only what the pool has available: it never creates debt by itself."""
    available = await store.locked_available(account_id, pool)
    if available < amount:
        raise InsufficientTokens(available=available, required=amount)
    await store.spread(account_id, pool, available - amount)
    await store.append(account_id, [LedgerEntry(EntryKind.ADJUSTMENT, pool, -amount, ref=ref, note=note)], now)
