"""ReverseCredit: refunds and disputes take a payment's tokens back; a won dispute returns them.

The payment is a pack purchase or a paid subscription invoice (`domain.payments`). Tokens are
taken from the pool the payment filled as far as it has them available; what was already spent
(or is held by calls in flight) becomes debt. For an invoice whose period has ended, what its
period left unused has expired already: that part is taken back from nothing, the rest was spent
and becomes debt. Each reversal applies only the change since the last one seen for that payment,
and a closed dispute stays closed, so repeated and out-of-order events change nothing twice.

A reversal of a payment meter has not seen yet, sent by the webhook adapter, waits for it
(`waiting`) instead of being refused: it is applied in the transaction that records the payment.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from meter import metrics
from meter.domain import ids, reversals
from meter.domain.accounts import Account
from meter.domain.amounts import require_tokens
from meter.domain.balance import Balance
from meter.domain.balance_events import EventType
from meter.domain.credits import RefusedPurchase
from meter.domain.errors import InvalidField, PaymentNotFound
from meter.domain.events import EventStatus, WebhookEvent
from meter.domain.ledger import EntryKind
from meter.domain.payments import Payment, PaymentKey, PaymentKind
from meter.domain.reversals import DisputeStatus
from meter.service import balance_warnings, events, refused_purchases, waiting
from meter.service.accounts import locked_current_account
from meter.service.context import Meter
from meter.service.ports import Store

MAX_REF_LENGTH = 255


class ReversalKind(enum.Enum):
    REFUND = "refund"
    DISPUTE = "dispute"
    DISPUTE_WON = "dispute_won"
    DISPUTE_LOST = "dispute_lost"


_DISPUTE_STATUS = {
    ReversalKind.DISPUTE: DisputeStatus.OPEN,
    ReversalKind.DISPUTE_WON: DisputeStatus.WON,
    ReversalKind.DISPUTE_LOST: DisputeStatus.LOST,
}


@dataclass(frozen=True)
class ReversalRequest:
    """What a reversal names: the payment (by one of its refs) and what happened to it."""

    kind: ReversalKind
    account_id: str = ""
    payment_ref: str = ""
    payment_intent: str = ""
    invoice_ref: str = ""
    amount_minor: int = 0  # a refund's cumulative refunded amount
    reversal_ref: str = ""  # the refund or dispute id, on the ledger entries

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"kind": self.kind.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReversalRequest:
        return cls(**(data | {"kind": ReversalKind(data["kind"])}))


@dataclass(frozen=True)
class Reversed:
    balance: Balance | None  # None while the reversal waits for its payment
    tokens: int  # taken back (negative: given back)
    unbilled: int
    event_status: EventStatus | None = None


async def reverse_credit(meter: Meter, request: ReversalRequest, source_event: WebhookEvent | None = None) -> Reversed:
    async def find(store: Store) -> object | None:  # a PaymentKey or a RefusedPurchase
        return await _payment_or_refusal(store, request)

    async def apply(found: object) -> Reversed:
        if isinstance(found, PaymentKey):
            return await _reverse_now(meter, found, request, source_event)
        assert isinstance(found, RefusedPurchase)
        return await _close_refusal(meter, found, request, source_event)

    async def run() -> Reversed:
        _check(request)
        events.check_event(source_event)
        waits = None
        if source_event is not None and (request.invoice_ref or request.payment_intent):
            # A charge that names its invoice (older API versions) waits for that invoice;
            # otherwise for its PaymentIntent to be credited or tied to an invoice.
            if request.invoice_ref:
                key, reason = waiting.invoice_key(request.invoice_ref), f"waiting for the invoice {request.invoice_ref}"
            else:
                key = waiting.payment_intent_key(request.payment_intent)
                reason = f"waiting for the payment {request.payment_intent}"
            waits = waiting.Waiting(key, "reversal", request.as_json(), source_event, reason)
        return await waiting.now_or_when_it_arrives(
            meter,
            find,
            apply,
            waits,
            Reversed(None, 0, 0, EventStatus.PENDING),
            PaymentNotFound(**_refs(request)),
        )

    return await events.rejecting(meter, events.event_account(request.account_id), source_event, run)


def _check(request: ReversalRequest) -> None:
    if request.kind is ReversalKind.REFUND:
        require_tokens("amount_minor", request.amount_minor, minimum=1, maximum=2**62)
    for name in ("payment_intent", "invoice_ref", "reversal_ref"):
        if len(getattr(request, name)) > MAX_REF_LENGTH:
            raise InvalidField(name, f"at most {MAX_REF_LENGTH} characters")
    if request.payment_ref:
        ids.account_id(request.account_id)
        ids.idempotency_key(request.payment_ref, "payment_ref")
    elif not (request.payment_intent or request.invoice_ref):
        raise InvalidField("payment_intent", "name the payment: payment_ref, payment_intent or invoice_ref")


def _refs(request: ReversalRequest) -> dict[str, str]:
    """The refs the request named, as PAYMENT_NOT_FOUND's metadata."""
    named = {
        "paymentRef": request.payment_ref,
        "paymentIntent": request.payment_intent,
        "invoiceRef": request.invoice_ref,
    }
    return {key: value for key, value in named.items() if value}


async def _payment_named(store: Store, request: ReversalRequest) -> PaymentKey | None:
    if request.payment_ref:
        return PaymentKey(PaymentKind.PACK, request.account_id, request.payment_ref)
    key = await store.payment_by_intent(request.payment_intent) if request.payment_intent else None
    if key is None and request.invoice_ref:
        key = await store.payment_by_invoice(request.invoice_ref)
    if key is None or (request.account_id and key.account_id != request.account_id):
        return None
    return key


async def _payment_or_refusal(store: Store, request: ReversalRequest) -> PaymentKey | RefusedPurchase | None:
    """The payment reversed, or for a refund of a payment meter refused to credit, that refusal
    (the refund settles it: nothing waits for a purchase that will never be credited)."""
    key = await _payment_named(store, request)
    if key is not None or request.kind is not ReversalKind.REFUND or not request.payment_intent:
        return key
    refused = await store.refused_purchase_by_intent(request.payment_intent)
    if refused is None or (request.account_id and refused.purchase.account_id != request.account_id):
        return None
    return refused


async def _close_refusal(
    meter: Meter, refused: RefusedPurchase, request: ReversalRequest, source_event: WebhookEvent | None
) -> Reversed:
    purchase = refused.purchase

    async def work(store: Store) -> Reversed | None:
        locked = await refused_purchases.locked(store, purchase.account_id, purchase.payment_ref)
        if locked is None:
            return None  # credited meanwhile: the refund reverses that purchase
        ref = request.reversal_ref or purchase.payment_ref
        status = await refused_purchases.close_by_refund(store, locked, request.amount_minor, ref, source_event)
        return Reversed(await store.balance(purchase.account_id), 0, 0, status)

    closed = await meter.storage.transaction(work)
    if closed is not None:
        return closed
    return await _reverse_now(meter, PaymentKey(PaymentKind.PACK, purchase.account_id, purchase.payment_ref), request,
                              source_event)  # fmt: skip


async def _reverse_now(
    meter: Meter, key: PaymentKey, request: ReversalRequest, source_event: WebhookEvent | None
) -> Reversed:
    async def work(store: Store) -> Reversed:
        account, now = await store.account_state(key.account_id)
        if account is None:
            raise PaymentNotFound(**_refs(request))
        claimed = await events.claim(store, key.account_id, source_event, now)
        status = events.status(source_event, claimed)
        if not claimed:
            return Reversed(await store.balance(key.account_id), 0, 0, status)
        tokens, unbilled = await apply_reversal(store, account, key, request, now)
        return Reversed(await store.balance(key.account_id), tokens, unbilled, status)

    reversed_ = await meter.storage.transaction(work)
    if reversed_.tokens > 0:
        metrics.TOKENS_REVERSED.inc(reversed_.tokens)
    assert reversed_.balance is not None
    await balance_warnings.announce(meter, reversed_.balance)
    return reversed_


async def apply_waiting(meter: Meter, store: Store, account_id: str, request: dict[str, Any], now: datetime) -> None:
    """A stored reversal, now that its payment has arrived (in the payment's transaction)."""
    reversal = ReversalRequest.from_json(request)
    key = await _payment_named(store, reversal)
    account, _ = await store.account_state(account_id)
    if key is None or key.account_id != account_id or account is None:
        raise PaymentNotFound(**_refs(reversal))
    await apply_reversal(store, account, key, reversal, now)


async def apply_reversal(
    store: Store, account: Account, key: PaymentKey, request: ReversalRequest, now: datetime
) -> tuple[int, int]:
    """Apply the reversal to the payment: (tokens taken back, of which debt)."""
    account = await locked_current_account(store, account, now)
    payment = await store.lock_payment(key)
    if payment is None:
        raise PaymentNotFound(**_refs(request))
    if request.kind is ReversalKind.REFUND:
        outcome = reversals.refund(payment.state, request.amount_minor)
    else:
        outcome = reversals.dispute(payment.state, _DISPUTE_STATUS[request.kind])
    payment = replace(payment, state=outcome.state)
    ref, unbilled, moved = request.reversal_ref or key.ref, 0, 0
    # The state is saved before tokens are taken (what a freeze took fits within what it froze) and
    # after they are given back (a won dispute reads where its freeze took them, which the state
    # with nothing frozen clears).
    if outcome.take >= 0:
        await store.save_payment(payment)
    if outcome.take > 0:
        kind = EntryKind.REFUND if request.kind is ReversalKind.REFUND else EntryKind.DISPUTE_FREEZE
        unbilled, moved = await _take(store, account, payment, outcome.take, kind, ref, now)
    elif outcome.take < 0:
        moved = await _give(store, account, payment, -outcome.take, ref, now)
        await store.save_payment(payment)
    # `tokens`: what the balance lost (or got back), as the ledger has it; `payment_tokens`: the
    # payment's tokens reversed, some of which may have expired with their period already.
    if outcome.take > 0:
        await store.emit(
            account.account_id,
            EventType.CREDIT_REVERSED,
            {
                "kind": request.kind.value,
                "tokens": moved,
                "debt": unbilled,
                "payment_tokens": outcome.take,
                "payment_ref": key.ref,
                "ref": ref,
            },
            now,
        )
    elif outcome.take < 0:
        await store.emit(
            account.account_id,
            EventType.DISPUTE_WON,
            {"tokens": moved, "payment_tokens": -outcome.take, "payment_ref": key.ref, "ref": ref},
            now,
        )
    if unbilled:
        await store.debt_events(account.account_id, ref, now)
    return outcome.take, unbilled


async def _take(
    store: Store, account: Account, payment: Payment, tokens: int, kind: EntryKind, ref: str, now: datetime
) -> tuple[int, int]:
    """Take `tokens` back (meter_take_back decides from where; what nothing covers becomes debt).
    Returns the debt, and what the balance lost (the pool's part and the debt)."""
    taken = await store.take_back(account.account_id, payment.key, tokens, kind, ref, now)
    return taken.debt, taken.from_pool + taken.debt


async def _give(store: Store, account: Account, payment: Payment, tokens: int, ref: str, now: datetime) -> int:
    """Give frozen tokens back (meter_give_back decides where); what the balance got back."""
    return await store.give_back(account.account_id, payment.key, tokens, ref, now)
