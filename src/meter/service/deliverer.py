"""The deliverer: sends pending webhook deliveries, in every replica, away from Reserve and Commit.

Each pass claims due deliveries (the oldest pending one of each account and endpoint: in order
per account) with a lease longer than a send can take, sends them at once, and records each
outcome in its own transaction: delivered on a 2xx, otherwise pending again after the schedule's
next wait, or dead once the schedule is spent. A replica killed mid-send records nothing; its
lease runs out and a replica sends the delivery again, under the same webhook-id (the receiver's
key for recognising a redelivery).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from meter import metrics
from meter.domain.webhook_deliveries import Delivery, RetrySchedule
from meter.service.context import Meter
from meter.service.ports import WebhookDeliveries

log = logging.getLogger(__name__)

# Sends one delivery; None when the endpoint answered 2xx, else what went wrong.
Send = Callable[[Delivery], Awaitable[str | None]]


@dataclass(frozen=True)
class DeliveryPolicy:
    schedule: RetrySchedule = field(default_factory=RetrySchedule)
    timeout_seconds: float = 10.0  # one send, connection to answer
    poll_seconds: float = 1.0  # how often a replica looks for due deliveries while it finds none
    batch: int = 50

    @property
    def lease_seconds(self) -> float:
        """Longer than any send: a claim is taken over only once its sender has surely given up."""
        return self.timeout_seconds * 1.5 + 1


async def deliver_once(meter: Meter, send: Send, policy: DeliveryPolicy) -> int:
    async def claim(store: WebhookDeliveries) -> list[Delivery]:
        return await store.claim_deliveries(await store.now(), policy.lease_seconds, policy.batch)

    claimed = await meter.storage.transaction(claim)
    await asyncio.gather(*(_attempt(meter, send, policy, delivery) for delivery in claimed))
    return len(claimed)


async def _attempt(meter: Meter, send: Send, policy: DeliveryPolicy, delivery: Delivery) -> None:
    error = await send(delivery)
    wait = None if error is None else policy.schedule.after(delivery.attempt)

    async def finish(store: WebhookDeliveries) -> bool:
        now = await store.now()
        retry_at = now + timedelta(seconds=wait) if wait is not None else None
        return await store.finish_delivery(delivery, now, error=error, retry_at=retry_at)

    await meter.storage.transaction(finish)
    outcome = "delivered" if error is None else "failed" if wait is not None else "dead"
    metrics.WEBHOOK_ATTEMPTS.labels(delivery.endpoint_id, outcome).inc()
    if error is not None:
        level = logging.WARNING if wait is not None else logging.ERROR
        log.log(
            level,
            "webhook to %s: event %s (%s) attempt %d: %s%s",
            delivery.endpoint_id,
            delivery.event.event_id,
            delivery.event.type,
            delivery.attempt,
            error,
            "" if wait is not None else "; the retry schedule is spent: dead until redelivered",
        )


async def run_deliverer(meter: Meter, send: Send, policy: DeliveryPolicy, stop: asyncio.Event) -> None:
    """Deliver until `stop` is set; a pass that fails (the database away) is logged and retried."""
    while not stop.is_set():
        sent = 0
        try:
            sent = await deliver_once(meter, send, policy)
        except Exception as exc:
            log.warning("webhook delivery pass failed: %s: %s", type(exc).__name__, exc)
        if not sent:  # found work: look again at once (an account's next event is due now)
            try:
                await asyncio.wait_for(stop.wait(), timeout=policy.poll_seconds)
            except TimeoutError:
                pass
