"""Retention of stored Stripe payloads (METER_WEBHOOK_PAYLOAD_RETENTION_DAYS).

Every verified Stripe event is stored with its raw body, which carries the customer's details
(name, email, address). The body is needed while something may still be done with it: an
operator's replay of a rejected event, a look at what Stripe sent. Once an event has not changed
for the window, its payload is deleted; the row stays with its id, type, status, reason and
account, so a late redelivery of the event is still recognised and changes nothing.

The window runs from the event's last change (`updated_at`, the database clock), not only from its
arrival: an event rejected or applied late (a pending one whose purchase arrived) gets the whole
window for an operator to look at or replay what became of it, and every replica measures it on
the same clock.

Pending events are pruned like the rest: what applies them when their purchase, invoice or
subscription arrives is the waiting request stored apart (`waiting_requests`, see
meter.service.waiting), never the payload. Keeping their payloads would keep, forever, those of
the events that never stop waiting (refunds of another product's payments on the Stripe account).

Each batch is its own short transaction that skips rows locked elsewhere, so replicas sweeping
at once share the work and never wait on each other.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from meter import metrics
from meter.service.context import Meter
from meter.service.ports import PayloadRetention, Payloads, Store

log = logging.getLogger(__name__)

# Payloads a transaction prunes: Stripe's events are a few kB, so a batch frees about a megabyte
# and holds its row locks for milliseconds (even at the 1 MB a payload may have, 200 MB).
BATCH = 200
# Batches a sweep prunes at most: a backlog (the first pass after an upgrade) is worked off over
# several sweeps rather than holding up the expiry of holds in one.
SWEEP_BATCHES = 10
PASSES = 5  # latest passes `meter retention` lists


def cutoff(meter: Meter, now: datetime) -> datetime | None:
    """Events unchanged since before this are due; None when payloads are kept forever."""
    days = meter.parameters.webhook_payload_retention_days
    return now - timedelta(days=days) if days else None


async def prune(meter: Meter, *, batches: int | None = SWEEP_BATCHES) -> Payloads:
    """One pass: prune due payloads a batch at a time until none is left or `batches` were done
    (None: no limit). Every row of the pass is stamped with its start, which is how `meter
    retention` tells passes apart. Counted and logged when it pruned something."""

    if not meter.parameters.webhook_payload_retention_days:
        return Payloads()  # kept forever: not even a round trip

    async def now(store: Store) -> datetime:
        return await store.now()

    started = await meter.storage.transaction(now)
    due_before = cutoff(meter, started)
    assert due_before is not None

    async def batch(store: Store) -> Payloads:
        return await store.prune_payloads(due_before, started, BATCH)

    pruned = Payloads()
    done = 0
    while batches is None or done < batches:
        last = await meter.storage.transaction(batch)
        pruned += last
        done += 1
        if last.count < BATCH:
            break
    if pruned.count:
        metrics.WEBHOOK_PAYLOADS_PRUNED.inc(pruned.count)
        log.info(
            "retention: pruned %d webhook payloads (%d bytes) of events unchanged for %d days",
            pruned.count,
            pruned.size,
            meter.parameters.webhook_payload_retention_days,
            extra={
                "fields": {
                    "payloads": pruned.count,
                    "bytes": pruned.size,
                    "retention_days": meter.parameters.webhook_payload_retention_days,
                    "pruned_at": started.isoformat(),
                }
            },
        )
    return pruned


async def report(meter: Meter, *, passes: int = PASSES) -> tuple[datetime | None, PayloadRetention]:
    """(the cutoff, None when payloads are kept forever; what is kept, due and pruned)."""

    async def work(store: Store) -> tuple[datetime | None, PayloadRetention]:
        due_before = cutoff(meter, await store.now())
        return due_before, await store.payload_retention(due_before, passes)

    return await meter.storage.transaction(work)
