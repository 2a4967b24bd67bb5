"""Carry out a mapped event through the metering service, and decide what Stripe is answered.

2xx only once the effect (or the event's record) is durable in the service; 5xx whenever the
service could not be reached or could not act yet, so that Stripe retries. A refusal a retry
cannot fix is a 2xx too: the service stored the event as rejected, for an operator's replay.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from meter.client import MeterClient, MeterRpcError, event_status
from meter.domain.events import EventStatus, WebhookEvent
from meter.webhooks.actions import (
    Action,
    Credit,
    Ignore,
    InvoicePaid,
    PaymentFailed,
    PaymentLink,
    Plan,
    Reject,
    Reverse,
)

_FINAL_REFUSALS = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS})


@dataclass(frozen=True)
class Outcome:
    http_status: int
    status: str  # applied | duplicate | ignored | rejected | pending | retry (| pruned: a replay with no payload left)
    reason: str = ""


async def forward(client: MeterClient, action: Action, event: WebhookEvent) -> Outcome:
    try:
        return await _call(client, action, event)
    except MeterRpcError as error:
        reason = f"{error.reason or error.code.name}: {error.message}"
        if error.code in _FINAL_REFUSALS:
            return Outcome(200, "rejected", reason)
        return Outcome(503, "retry", reason)


async def _call(client: MeterClient, action: Action, event: WebhookEvent) -> Outcome:
    if isinstance(action, Ignore | Reject):
        stored = EventStatus.IGNORED if isinstance(action, Ignore) else EventStatus.REJECTED
        recorded = await client.record_webhook_event(
            event=event, status=stored, reason=action.reason, account_id=action.account_id
        )
        return _done(recorded.event_status, action.reason)
    if isinstance(action, Credit):
        credited = await client.credit_purchase(
            account_id=action.account_id,
            pack_id=action.pack_id,
            tokens=action.tokens,
            amount_minor=action.amount_minor,
            currency=action.currency,
            payment_ref=action.payment_ref,
            payment_intent=action.payment_intent,
            event_id=event.event_id,
            source_event=event,
        )
        return _done(credited.event_status)
    if isinstance(action, Reverse):
        reversed_ = await client.reverse_credit(
            kind=action.kind,
            payment_intent=action.payment_intent,
            amount_minor=action.amount_minor,
            reversal_ref=action.reversal_ref,
            source_event=event,
            invoice_ref=action.invoice_ref,
        )
        return _done(reversed_.event_status)
    if isinstance(action, Plan):
        start, end = action.period or (None, None)
        planned = await client.set_plan(
            account_id=action.account_id,
            plan_id=action.plan_id,
            period_start=start,
            period_end=end,
            subscription_ref=action.subscription_ref,
            event_time=action.event_time,
            subscription_cancelled=action.subscription_cancelled,
            source_event=event,
            stripe_prices=action.stripe_prices,
            subscription_status=action.subscription_status,
        )
        return _done(planned.event_status)
    if isinstance(action, PaymentFailed):
        failed = await client.record_payment_failure(
            subscription_ref=action.subscription_ref,
            invoice_ref=action.invoice_ref,
            account_id=action.account_id,
            amount_minor=action.amount_minor,
            currency=action.currency,
            attempt_count=action.attempt_count,
            next_attempt=action.next_attempt,
            billing_reason=action.billing_reason,
            source_event=event,
        )
        return _done(failed.event_status)
    if isinstance(action, PaymentLink):
        linked = await client.link_invoice_payment(
            invoice_ref=action.invoice_ref, payment_intent=action.payment_intent, source_event=event
        )
        return _done(linked.event_status)
    assert isinstance(action, InvoicePaid)
    granted = await client.grant_period_allowance(
        subscription_ref=action.subscription_ref,
        invoice_ref=action.invoice_ref,
        account_id=action.account_id,
        amount_minor=action.amount_minor,
        currency=action.currency,
        lines=action.lines,
        payment_intent=action.payment_intent,
        source_event=event,
    )
    return _done(granted.event_status)


def _done(status: int, reason: str = "") -> Outcome:
    stored = event_status(status)
    return Outcome(200, stored.value if stored else "applied", reason)
