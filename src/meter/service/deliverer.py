"""The deliverer: sends pending webhook deliveries, in every replica, away from Reserve and Commit.

It sends continuously: up to `concurrency` sends in flight in the replica, at most
`per_endpoint` of them to one endpoint, and it claims due deliveries for the free places as soon
as a delivery is done (delivered or dead: its account's next event is due now), as soon as any
send ends while more was due than there were places, and otherwise every `poll_seconds`. So an
endpoint that is slow or never answers holds its own places for at most the send timeout, the
other endpoints' deliveries go on meanwhile, and one that keeps failing is tried no more than its
places allow each `poll_seconds`.

A claim takes the oldest pending delivery of each account and endpoint that is due (the others
wait behind it: in order per account), with a lease longer than a send can take; each outcome is
recorded in its own transaction: delivered on a 2xx, otherwise pending again after the schedule's
next wait, or dead once the schedule is spent. An endpoint that does not answer within the
timeout is backed off (its deliveries wait, for twice as long after each further timeout); one
that answers 410 Gone is disabled until an operator resumes it. A replica killed mid-send records
nothing; its lease runs out and a replica sends the delivery again, under the same webhook-id (the
receiver's key for recognising a redelivery).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from meter import metrics
from meter.domain.webhook_deliveries import Attempt, Delivery, Outcome, RetrySchedule
from meter.service.context import Meter
from meter.service.ports import WebhookDeliveries

log = logging.getLogger(__name__)

# Sends one delivery and says how the attempt ended.
Send = Callable[[Delivery], Awaitable[Attempt]]
# How often a replica looks for queued deliveries with nothing before them (see due_stranded).
STRANDED_CHECK_SECONDS = 60.0


@dataclass(frozen=True)
class DeliveryPolicy:
    schedule: RetrySchedule = field(default_factory=RetrySchedule)
    timeout_seconds: float = 10.0  # one send, connection to answer
    poll_seconds: float = 1.0  # how often a replica looks for due deliveries while it finds none
    concurrency: int = 64  # sends in flight in one replica
    per_endpoint: int = 8  # of which to one endpoint
    backoff_max_seconds: float = 600.0  # the longest an endpoint that does not answer is left alone

    @property
    def lease_seconds(self) -> float:
        """Longer than any send: a claim is taken over only once its sender has surely given up."""
        return self.timeout_seconds * 1.5 + 1


class Deliverer:
    """One replica's sends in flight, by endpoint, and the loop that keeps them going."""

    def __init__(self, meter: Meter, send: Send, policy: DeliveryPolicy) -> None:
        self._meter = meter
        self._send = send
        self._policy = policy
        self._sending: Counter[str] = Counter()  # sends in flight, by endpoint
        self._tasks: set[asyncio.Task[None]] = set()
        self._claim_now = asyncio.Event()  # something is due that a free place could take
        self._places_short = False  # the last claim filled every free place: more may be due

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then let the sends in flight end (each within the timeout)."""
        loop = asyncio.get_running_loop()
        stranded_check = 0.0
        while not stop.is_set():
            self._claim_now.clear()  # before the claim: a send ending meanwhile brings the next claim at once
            try:
                if loop.time() >= stranded_check:
                    await self._due_stranded()
                    stranded_check = loop.time() + STRANDED_CHECK_SECONDS
                await self.claim_and_send()
            except Exception as exc:
                log.warning("claiming webhook deliveries failed: %s: %s", type(exc).__name__, exc)
            await _first(self._claim_now, stop, timeout=self._policy.poll_seconds)
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def claim_and_send(self) -> int:
        """Claim what the free places allow and start sending it; the number claimed."""
        free = self._policy.concurrency - len(self._tasks)
        if free <= 0:
            return 0
        policy, sending = self._policy, dict(self._sending)

        async def claim(store: WebhookDeliveries) -> list[Delivery]:
            now = await store.now()
            return await store.claim_deliveries(now, policy.lease_seconds, free, policy.per_endpoint, sending)

        claimed = await self._meter.storage.transaction(claim)
        self._places_short = len(claimed) == free
        for delivery in claimed:
            self._sending[delivery.endpoint_id] += 1
            task = asyncio.create_task(self._deliver(delivery), name=f"webhook-{delivery.endpoint_id}")
            self._tasks.add(task)
        return len(claimed)

    async def _due_stranded(self) -> None:
        """Make due the queued deliveries nothing is pending before (none, unless a replica of
        the version before the queueing ran meanwhile: it does not make the next one due)."""

        async def work(store: WebhookDeliveries) -> int:
            return await store.due_stranded(await store.now())

        if stranded := await self._meter.storage.transaction(work):
            log.warning("%d queued webhook deliveries had nothing before them: due now", stranded)

    async def _deliver(self, delivery: Delivery) -> None:
        done = False
        try:
            done = await attempt(self._meter, self._send, self._policy, delivery)
        except Exception as exc:  # the database away: the lease runs out and the delivery is sent again
            log.warning("recording a webhook attempt failed: %s: %s", type(exc).__name__, exc)
        finally:
            self._sending[delivery.endpoint_id] -= 1
            if not self._sending[delivery.endpoint_id]:
                del self._sending[delivery.endpoint_id]
            self._tasks.discard(asyncio.current_task())
            if done or self._places_short:
                self._claim_now.set()


async def attempt(meter: Meter, send: Send, policy: DeliveryPolicy, delivery: Delivery) -> bool:
    """Send one claimed delivery and record how it ended (and what that means for its endpoint);
    True when the delivery is done (delivered, or dead): the account's next one is due."""
    result = await send(delivery)
    delivered = result.outcome is Outcome.DELIVERED
    wait = None if delivered else policy.schedule.after(delivery.attempt)

    async def finish(store: WebhookDeliveries) -> None:
        now = await store.now()
        retry_at = now + timedelta(seconds=wait) if wait is not None else None
        if not await store.finish_delivery(delivery, now, error=result.error, retry_at=retry_at):
            return  # claimed again since (its lease ran out): that attempt decides
        if result.outcome is Outcome.TIMED_OUT:
            await store.back_off_endpoint(delivery.endpoint_id, now, policy.timeout_seconds, policy.backoff_max_seconds)
        elif result.outcome is Outcome.GONE:
            await store.disable_endpoint(
                delivery.endpoint_id, now, f"answered 410 Gone to event {delivery.event.event_id}"
            )
        elif delivery.endpoint_timeouts:
            await store.endpoint_answered(delivery.endpoint_id)

    await meter.storage.transaction(finish)
    outcome = "delivered" if delivered else "failed" if wait is not None else "dead"
    metrics.WEBHOOK_ATTEMPTS.labels(delivery.endpoint_id, outcome).inc()
    if not delivered:
        _log_failure(delivery, result, dead=wait is None)
    return wait is None


def _log_failure(delivery: Delivery, result: Attempt, *, dead: bool) -> None:
    level = logging.ERROR if dead or result.outcome is Outcome.GONE else logging.WARNING
    then = {
        Outcome.TIMED_OUT: "; the endpoint is backed off (its deliveries wait)",
        Outcome.GONE: f"; the endpoint is disabled until `meter endpoints resume {delivery.endpoint_id}`",
    }.get(result.outcome, "")
    log.log(
        level,
        "webhook to %s: event %s (%s) attempt %d: %s%s%s",
        delivery.endpoint_id,
        delivery.event.event_id,
        delivery.event.type,
        delivery.attempt,
        result.error,
        then,
        "; the retry schedule is spent: dead until redelivered" if dead else "",
    )


async def _first(ended: asyncio.Event, stop: asyncio.Event, *, timeout: float) -> None:
    """Wait until a send ends, `stop` is set, or `timeout` passes."""
    waits = [asyncio.ensure_future(ended.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def run_deliverer(meter: Meter, send: Send, policy: DeliveryPolicy, stop: asyncio.Event) -> None:
    await Deliverer(meter, send, policy).run(stop)
