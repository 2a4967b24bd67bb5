"""RecordPaymentFailure: a subscription invoice Stripe could not collect, told to the product.

Nothing is taken or granted: the month the invoice pays for gets its allowance only once the
invoice is paid (GrantPeriodAllowance), so a renewal that fails leaves the new month without its
allowance until a later attempt succeeds. The failure is told once per event as
subscription.payment_failed on the subscriber's account, with Stripe's attempt count and next
attempt (none: its retries are over), so that the product can ask its customer for another card.
A failure of a subscription no account is linked to yet waits for it (`waiting`), as its invoices do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from meter.domain import ids
from meter.domain.amounts import require_tokens
from meter.domain.balance import Balance
from meter.domain.balance_events import EventType
from meter.domain.errors import InvalidField, SubscriptionNotFound
from meter.domain.events import EventStatus, WebhookEvent
from meter.service import events, invoices, waiting
from meter.service.accounts import locked_current_account
from meter.service.context import Meter
from meter.service.ports import Store

MAX_TEXT = 64


@dataclass(frozen=True)
class PaymentFailure:
    subscription_ref: str
    invoice_ref: str
    account_id: str = ""  # when the invoice names it (the subscription's metadata)
    amount_minor: int = 0
    currency: str = ""
    attempt_count: int = 0
    next_attempt: datetime | None = None  # None: Stripe will not try again
    billing_reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"next_attempt": self.next_attempt.isoformat() if self.next_attempt else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PaymentFailure:
        next_attempt = datetime.fromisoformat(data["next_attempt"]) if data["next_attempt"] else None
        return cls(**(data | {"next_attempt": next_attempt}))


@dataclass(frozen=True)
class Recorded:
    balance: Balance | None  # None while the failure waits for its subscription
    event_status: EventStatus | None = None


async def record_payment_failure(
    meter: Meter, failure: PaymentFailure, source_event: WebhookEvent | None = None
) -> Recorded:
    async def run() -> Recorded:
        _check(failure)
        events.check_event(source_event)
        waits = None
        if source_event is not None:
            key = waiting.subscription_key(failure.subscription_ref)
            reason = f"waiting for the subscription {failure.subscription_ref}"
            waits = waiting.Waiting(key, "payment_failure", failure.as_json(), source_event, reason)
        return await waiting.now_or_when_it_arrives(
            meter,
            lambda store: invoices.subscriber(store, failure.subscription_ref, failure.account_id),
            lambda account_id: _record_now(meter, account_id, failure, source_event),
            waits,
            Recorded(None, EventStatus.PENDING),
            SubscriptionNotFound(failure.subscription_ref),
        )

    return await events.rejecting(meter, events.event_account(failure.account_id), source_event, run)


def _check(failure: PaymentFailure) -> None:
    ids.idempotency_key(failure.subscription_ref, "subscription_ref")
    ids.idempotency_key(failure.invoice_ref, "invoice_ref")
    if failure.account_id:
        ids.account_id(failure.account_id)
    require_tokens("amount_minor", failure.amount_minor, minimum=0, maximum=2**62)
    require_tokens("attempt_count", failure.attempt_count, minimum=0, maximum=1_000)
    for name in ("currency", "billing_reason"):
        if len(getattr(failure, name)) > MAX_TEXT:
            raise InvalidField(name, f"at most {MAX_TEXT} characters")


async def _record_now(
    meter: Meter, account_id: str, failure: PaymentFailure, source_event: WebhookEvent | None
) -> Recorded:
    async def work(store: Store) -> Recorded:
        account, now = await store.account_state(account_id)
        if account is None:
            raise SubscriptionNotFound(failure.subscription_ref)
        claimed = await events.claim(store, account_id, source_event, now)
        if claimed:
            await locked_current_account(store, account, now)  # told with the balance as it is now
            await tell(store, account_id, failure, now)
        return Recorded(await store.balance(account_id), events.status(source_event, claimed))

    return await meter.storage.transaction(work)


async def apply_waiting_failure(
    meter: Meter, store: Store, account_id: str, request: dict[str, Any], now: datetime
) -> None:
    """A stored failure, now that SetPlan linked its subscription (in that transaction)."""
    await tell(store, account_id, PaymentFailure.from_json(request), now)


async def tell(store: Store, account_id: str, failure: PaymentFailure, now: datetime) -> None:
    await store.emit(
        account_id,
        EventType.PAYMENT_FAILED,
        {
            "subscription_ref": failure.subscription_ref,
            "invoice_ref": failure.invoice_ref,
            "amount_minor": failure.amount_minor,
            "currency": failure.currency,
            "attempt_count": failure.attempt_count,
            "next_attempt_at": failure.next_attempt.isoformat() if failure.next_attempt else None,
            "billing_reason": failure.billing_reason,
        },
        now,
    )
