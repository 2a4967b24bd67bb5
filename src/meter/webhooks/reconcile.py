"""`meter reconcile`: what Stripe says happened that meter never heard of, applied late.

A webhook lost past Stripe's three days of retries, a secret rotated at the wrong time, a deploy
that answered 400 for an hour: the payment is made and nothing is credited. Stripe keeps 30 days of
events that its API lists. Reconciling lists those of the types meter consumes, asks meter which it
has stored (GetWebhookEvent), and puts each one meter never stored through the same path a
delivered event takes (`mapping.action_for`, `forward.forward`): as if its webhook had arrived late,
so it is applied once, however often reconciling runs and whatever the webhook does meanwhile
(the webhook adapter also runs it on a schedule: `every`, METER_RECONCILE_INTERVAL_SECONDS). An
event fetched with meter's own key is Stripe's by construction: no signature to check. Events
meter stored already (applied, ignored, rejected, or pending for what they wait for) are left as
they are: a rejected one is an operator's to replay once its cause is fixed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from meter import metrics
from meter.client import MeterClient, MeterRpcError, event_status
from meter.domain.errors import StripeRefused, StripeUnavailable
from meter.domain.events import WebhookEvent
from meter.webhooks.forward import forward
from meter.webhooks.mapping import action_for

if TYPE_CHECKING:
    from meter.stripe_api import StripeApi

log = logging.getLogger(__name__)

# Every event type the webhook adapter acts on (mapping.py), and so what reconciling lists.
CONSUMED_TYPES = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice_payment.paid",
)


@dataclass
class Reconciled:
    listed: int = 0  # events Stripe listed
    known: Counter[str] = field(default_factory=Counter)  # stored before, by their status
    missed: Counter[str] = field(default_factory=Counter)  # never stored, by what applying them did
    unresolved: list[str] = field(default_factory=list)  # missed events that could not be applied now

    def lines(self) -> list[str]:
        known = ", ".join(f"{n} {status}" for status, n in sorted(self.known.items())) or "none"
        missed = ", ".join(f"{n} {status}" for status, n in sorted(self.missed.items())) or "none"
        said = [
            f"Stripe listed {self.listed} events of the types meter consumes",
            f"stored by meter before: {known}",
            f"never received, applied now: {missed}",
        ]
        said += [f"could not be applied (run again): {event_id}" for event_id in self.unresolved]
        return said


async def reconcile(client: MeterClient, events: AsyncIterator[dict[str, Any]]) -> Reconciled:
    """Applied as Stripe lists them, a page at a time (30 days of events need not fit in
    memory): newest first, which meter takes as any delivery order (an older subscription update
    changes nothing, a refund waits for its payment)."""
    found = Reconciled()
    async for event in events:
        found.listed += 1
        event_id = str(event["id"])
        try:
            stored = await client.get_webhook_event(event_id=event_id)
        except MeterRpcError as error:
            if error.reason != "EVENT_NOT_FOUND":
                raise
        else:
            status = event_status(stored.status)
            found.known[status.value if status else "stored"] += 1
            continue
        payload = json.dumps(event, separators=(",", ":")).encode()
        source = WebhookEvent(event_id, str(event["type"]), payload, datetime.now(UTC))
        outcome = await forward(client, action_for(event), source)
        found.missed[outcome.status] += 1
        metrics.RECONCILED_EVENTS.labels(outcome.status).inc()
        if outcome.status == "retry":
            found.unresolved.append(event_id)
    return found


@dataclass
class Schedule:
    """Reconciling on a schedule, in the webhook adapter: every `interval` seconds, the last `days`."""

    stripe_api: StripeApi
    interval: float
    days: int
    runs: int = 0  # completed runs in this process (tests read it)

    async def every(self, client: MeterClient) -> None:
        """Until cancelled. A run that fails (Stripe or meter unreachable) is logged; the next one
        starts over: nothing it applied is applied twice."""
        while True:
            try:
                since = datetime.now(UTC) - timedelta(days=self.days)
                found = await reconcile(client, self.stripe_api.events(CONSUMED_TYPES, since))
            except (MeterRpcError, StripeUnavailable, StripeRefused) as error:
                log.warning("reconcile: did not finish: %s", error)
            else:
                level = logging.WARNING if found.missed else logging.INFO
                log.log(level, "reconcile: %s", "; ".join(found.lines()))
                self.runs += 1
            await asyncio.sleep(self.interval)
