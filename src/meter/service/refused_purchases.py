"""Settling a refused purchase: support refunds it through meter (RefundRefusedPurchase asks
Stripe for the refund, under an idempotency key of the payment) or marks it resolved with a note
(ResolveRefusedPurchase); a refund's event for a refused payment closes it instead of waiting for a
purchase that will never be credited. Every step locks the payment's decision first, as crediting
and refusing do, so a payment is either credited or given back, never both: a settled refusal is
not credited by a later event (`purchases`). The rules of each step are `domain.refusals`; the
end of a settlement (refunded whole, or resolved) is told once as purchase.refusal_settled.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from meter.domain import ids, refusals
from meter.domain.balance_events import EventType
from meter.domain.callers import acting_caller
from meter.domain.credits import RefusalState, RefusedPurchase, Settlement
from meter.domain.errors import InvalidField, RefusedPurchaseNotFound, StripeNotConfigured, StripeRefused
from meter.domain.events import EventStatus, WebhookEvent
from meter.service import events
from meter.service.context import Meter
from meter.service.ports import Store


async def refund_refused_purchase(meter: Meter, *, account_id: str, payment_ref: str) -> RefusedPurchase:
    ids.account_id(account_id)
    ids.idempotency_key(payment_ref, "payment_ref")
    provider = meter.stripe
    if provider is None:
        raise StripeNotConfigured()
    caller = acting_caller()

    async def request(store: Store) -> tuple[RefusedPurchase, Settlement]:
        refused, now = await _locked(store, account_id, payment_ref)
        if not refused.purchase.payment_intent:
            raise InvalidField("payment_ref", "its payment names no PaymentIntent: refund it in Stripe's dashboard")
        after = refusals.refund_requested(payment_ref, refused.settlement, now, caller)
        await _save(store, refused, after, now)
        return replace(refused, settlement=after), refused.settlement

    refused, before = await meter.storage.transaction(request)
    if refused.settlement.state is RefusalState.REFUNDED:
        return refused
    assert refused.purchase.payment_intent is not None
    try:  # under an idempotency key of the payment: asked again, Stripe refunds once
        refund_ref = await provider.refund_refused(account_id, payment_ref, refused.purchase.payment_intent)
    except StripeRefused:  # nothing was refunded: the purchase is as it was before this request
        await meter.storage.transaction(lambda store: _undo_request(store, account_id, payment_ref, before))
        raise

    async def record(store: Store) -> RefusedPurchase:
        locked, now = await _locked(store, account_id, payment_ref)
        after = replace(locked.settlement, refund_ref=locked.settlement.refund_ref or refund_ref)
        await _save(store, locked, after, now)
        return replace(locked, settlement=after)

    return await meter.storage.transaction(record)


async def resolve_refused_purchase(meter: Meter, *, account_id: str, payment_ref: str, note: str) -> RefusedPurchase:
    ids.account_id(account_id)
    ids.idempotency_key(payment_ref, "payment_ref")
    if not note.strip() or len(note) > refusals.MAX_NOTE:
        raise InvalidField("note", f"say how it was settled, in 1 to {refusals.MAX_NOTE} characters")
    caller = acting_caller()

    async def work(store: Store) -> RefusedPurchase:
        refused, now = await _locked(store, account_id, payment_ref)
        after = refusals.resolved(payment_ref, refused.settlement, note, now, caller)
        await _save(store, refused, after, now)
        return replace(refused, settlement=after)

    return await meter.storage.transaction(work)


async def close_by_refund(
    store: Store, refused: RefusedPurchase, cumulative_minor: int, refund_ref: str, event: WebhookEvent | None
) -> EventStatus | None:
    """A refund's event for a refused payment (in the reversal's transaction, the payment's
    decision locked): what Stripe says was refunded, and refunded whole, the purchase settled."""
    purchase = refused.purchase
    account_id = purchase.account_id
    now = await store.now()
    claimed = await events.claim(store, account_id, event, now)
    if claimed:
        after = refusals.refunded(refused.settlement, cumulative_minor, purchase.amount_minor, refund_ref, now)
        await _save(store, refused, after, now)
    return events.status(event, claimed)


async def locked(store: Store, account_id: str, payment_ref: str) -> RefusedPurchase | None:
    """The refusal, locked after its payment's decision (as every decision on a payment is, one
    after another); None once the payment was credited after all."""
    await store.lock_payment_decision(payment_ref)
    return await store.lock_refused_purchase(account_id, payment_ref)


async def _locked(store: Store, account_id: str, payment_ref: str) -> tuple[RefusedPurchase, datetime]:
    now = await store.now()
    refused = await locked(store, account_id, payment_ref)
    if refused is None:
        raise RefusedPurchaseNotFound(account_id, payment_ref)
    return refused, now


async def _undo_request(store: Store, account_id: str, payment_ref: str, before: Settlement) -> None:
    refused, now = await _locked(store, account_id, payment_ref)
    if refused.settlement.state is RefusalState.REFUND_REQUESTED and refused.settlement.refund_ref is None:
        await _save(store, refused, before, now)


async def _save(store: Store, refused: RefusedPurchase, after: Settlement, now: datetime) -> None:
    """The settlement, and once it ends (refunded whole, or resolved) purchase.refusal_settled."""
    if after == refused.settlement:
        return
    purchase = refused.purchase
    await store.settle_refused_purchase(purchase.account_id, purchase.payment_ref, after)
    ended = (RefusalState.REFUNDED, RefusalState.RESOLVED)
    if after.state in ended and refused.settlement.state not in ended:
        await store.emit(
            purchase.account_id,
            EventType.PURCHASE_REFUSAL_SETTLED,
            {
                "payment_ref": purchase.payment_ref,
                "payment_intent": purchase.payment_intent,
                "pack_id": purchase.pack_id,
                "amount_minor": purchase.amount_minor,
                "currency": purchase.currency,
                "state": after.state.value,
                "refunded_minor": after.refunded_minor,
                "refund_ref": after.refund_ref,
                "note": after.note,
            },
            now,
        )
