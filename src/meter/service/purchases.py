"""CreditPurchase: a paid pack's tokens in, once per payment, whatever its events say.

A payment (a Checkout Session) is decided once, in `pack_payments`, whose row each decision locks
before anything else: credited to one account, or refused and told on one. Metadata is never
trusted: a session meter sold is credited to the account it was sold to, on the terms it was sold
on (an event naming another account is refused, and the refusal filed under the buyer); any other
session on the catalog's terms now, to the first account an acceptable event names (an event
naming another account afterwards changes nothing). A refused payment that a later event (with
the terms as sold), or a replay after fixing the catalog, credits is credited after all: the
refusal is resolved and told (purchase.refusal_resolved), so that nobody refunds a payment that
bought its tokens, and support's list shows it no more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from meter import metrics
from meter.domain import ids, refusals
from meter.domain.amounts import require_tokens
from meter.domain.balance import Balance
from meter.domain.balance_events import EventType
from meter.domain.checkout import CheckoutSession
from meter.domain.credits import PaymentDecision, PaymentOutcome, Purchase, RefusedPurchase
from meter.domain.errors import InvalidField, MeterError, PurchaseMismatch, RequestIdReused
from meter.domain.events import EventStatus, WebhookEvent
from meter.domain.ledger import EntryKind
from meter.domain.pools import PoolName
from meter.service import events, waiting
from meter.service.accounts import credit_pool, free_account, locked_current_account, open_account
from meter.service.context import Meter
from meter.service.ports import Conflict, Store

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
        session = await meter.storage.transaction(lambda store: store.sold_session(payment_ref))
        paid = Purchase(
            account_id, payment_ref, pack_id, tokens, amount_minor, currency, payment_intent or None, event_id or None
        )
        try:
            purchase = _checked_purchase(meter, session, paid)
        except MeterError as refusal:
            # Filed under the account the session was sold to, when meter sold it: its buyer.
            buyer = session.account_id if session is not None else account_id
            refused = Purchase(buyer, payment_ref, pack_id[:255], tokens, amount_minor, currency[:16],
                               payment_intent or None, event_id or None)  # fmt: skip
            await _refuse(meter, RefusedPurchase(refused, refusal.reason, str(refusal)[:1000]))
            raise
        credited = await meter.storage.transaction(lambda store: _credit(meter, store, purchase, source_event))
        if credited.newly_credited:
            metrics.TOKENS_CREDITED.inc(credited.tokens)
        return credited

    return await events.rejecting(meter, events.event_account(account_id), source_event, run)


async def _credit(meter: Meter, store: Store, purchase: Purchase, source_event: WebhookEvent | None) -> Credited:
    account_id, payment_ref, tokens = purchase.account_id, purchase.payment_ref, purchase.tokens
    decision = await store.lock_payment_decision(payment_ref)  # the first lock: see pack_payments
    if decision is not None and decision.outcome is PaymentOutcome.CREDITED and decision.account_id != account_id:
        raise RequestIdReused(payment_ref, "account_id")  # credited once, to the account it was credited to
    if decision is not None and decision.outcome is PaymentOutcome.REFUSED:
        refused = await store.lock_refused_purchase(decision.account_id, payment_ref)
        if refused is not None:  # refunded or resolved: never credited as well
            refusals.check_creditable(payment_ref, refused.settlement)
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
    credited = PaymentDecision(payment_ref, account_id, PaymentOutcome.CREDITED)
    if not await store.insert_purchase(purchase, now) or not await store.decide_payment(
        credited, now, undecided=decision is None
    ):
        raise Conflict("the same payment was credited concurrently")
    await store.mark_session_paid(account_id, payment_ref, now)
    account = await locked_current_account(store, account, now)
    told = _told(purchase)
    if purchase.expires_after_days is not None:  # a pack that expires: a grant of its own
        expires_at = now + timedelta(days=purchase.expires_after_days)
        grant_id = await store.credit_pack_grant(purchase, expires_at, now)
        told |= {"grant_id": grant_id, "expires_at": expires_at.isoformat()}
    else:
        await credit_pool(
            store, account, EntryKind.PURCHASE, PoolName.PURCHASED, tokens, now, ref=payment_ref, note=purchase.pack_id
        )
    await store.emit(account_id, EventType.PURCHASE_CREDITED, told, now)
    if decision is not None:  # refused before: the refusal is resolved, where it was told
        await store.emit(
            decision.account_id, EventType.PURCHASE_REFUSAL_RESOLVED, {**told, "credited_account_id": account_id}, now
        )
    if purchase.payment_intent:  # a refund or dispute that arrived first is applied now
        await waiting.release(meter, store, account_id, waiting.payment_intent_key(purchase.payment_intent), now)
    return Credited(await store.balance(account_id), tokens, newly_credited=True, event_status=status)


async def _refuse(meter: Meter, refused: RefusedPurchase) -> None:
    """A payment meter will not credit was still taken: unless it was decided before (credited,
    or refused and told), it is kept once, for support to refund, and told once as
    purchase.refused (on the account it was bought for, opened if it is new)."""
    purchase = refused.purchase

    async def work(store: Store) -> None:
        if await store.lock_payment_decision(purchase.payment_ref) is not None:
            return  # credited (nothing is refused), or refused and told before (a redelivery)
        account, now = await store.account_state(purchase.account_id)
        if account is None:
            await open_account(
                store, free_account(purchase.account_id, meter.catalog, now, meter.parameters.buckets), now
            )
        decision = PaymentDecision(purchase.payment_ref, purchase.account_id, PaymentOutcome.REFUSED)
        if not await store.decide_payment(decision, now, undecided=True):
            raise Conflict("the same payment was decided concurrently")
        await store.insert_refused_purchase(refused, now)
        await store.mark_session_paid(purchase.account_id, purchase.payment_ref, now)
        await store.emit(
            purchase.account_id,
            EventType.PURCHASE_REFUSED,
            {**_told(purchase), "reason": refused.reason, "message": refused.message},
            now,
        )

    await meter.storage.transaction(work)


def _told(purchase: Purchase) -> dict[str, object]:
    """What the purchase events say of a payment."""
    return {
        "payment_ref": purchase.payment_ref,
        "pack_id": purchase.pack_id,
        "tokens": purchase.tokens,
        "amount_minor": purchase.amount_minor,
        "currency": purchase.currency,
    }


def _checked_purchase(meter: Meter, session: CheckoutSession | None, paid: Purchase) -> Purchase:
    """A purchase is credited only as it was sold: a session meter created, to the account and
    on the terms of its sale (under the catalog version of its sale, whatever the catalog says
    now); any other, as the catalog sells its pack now. Metadata is never trusted."""
    if session is not None and paid.account_id != session.account_id:
        raise PurchaseMismatch("account_id", session.account_id, paid.account_id, source="meter sold the session to")
    if session is not None and paid.pack_id != session.sold.pack_id:
        raise PurchaseMismatch("pack_id", session.sold.pack_id, paid.pack_id[:255])
    pack = session.sold if session is not None else meter.catalog.sold_now(paid.pack_id)
    require_tokens("tokens", paid.tokens, minimum=1, maximum=meter.parameters.max_credit_tokens)
    require_tokens("amount_minor", paid.amount_minor, minimum=0, maximum=2**62)
    if paid.tokens != pack.tokens:
        raise PurchaseMismatch("tokens", pack.tokens, paid.tokens)
    if paid.amount_minor != pack.price_minor:
        raise PurchaseMismatch("amount_minor", pack.price_minor, paid.amount_minor)
    if paid.currency.lower() != pack.currency:
        raise PurchaseMismatch("currency", pack.currency, paid.currency[:16])
    return Purchase(
        paid.account_id,
        paid.payment_ref,
        paid.pack_id,
        paid.tokens,
        paid.amount_minor,
        pack.currency,
        paid.payment_intent,
        paid.event_id,
        pack.expires_after_days,
    )
