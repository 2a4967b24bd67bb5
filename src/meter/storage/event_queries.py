"""Queries on stored webhook events: each verified event once, claimed before its effect; and the
retention of their payloads (deleted once an event has not changed for the window, the row kept)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meter.domain.events import EventStatus, StoredEvent, WebhookEvent
from meter.service.ports import PayloadRetention, Payloads
from meter.storage.queries import Queries

# One batch of the retention: the oldest payloads due, locked, emptied. SKIP LOCKED: rows another
# replica is pruning (or a delivery is changing) are left to it, so replicas sweeping at once
# share the work instead of queueing on each other's locks, and a batch never waits. Locking
# re-checks the row as committed now (READ COMMITTED): an event changed meanwhile is not due.
# A row keeps its id, type, status, reason and account: a late redelivery is still a duplicate.
PRUNE_PAYLOADS = """
WITH due AS (
    SELECT account_id, event_id FROM webhook_events
    WHERE payload_pruned_at IS NULL AND updated_at < :cutoff
    ORDER BY updated_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), pruned AS (
    UPDATE webhook_events AS w
    SET payload = CAST('' AS bytea), payload_pruned_at = :now, pruned_payload_bytes = octet_length(w.payload)
    FROM due
    WHERE w.account_id = due.account_id AND w.event_id = due.event_id
    RETURNING w.pruned_payload_bytes
)
SELECT count(*) AS count, coalesce(sum(pruned_payload_bytes), 0) AS size FROM pruned
"""

# octet_length of a bytea reads its stored length: the payloads themselves are not fetched.
PAYLOAD_RETENTION = """
SELECT
    count(*) FILTER (WHERE payload_pruned_at IS NULL) AS kept,
    coalesce(sum(octet_length(payload)) FILTER (WHERE payload_pruned_at IS NULL), 0) AS kept_size,
    count(*) FILTER (WHERE payload_pruned_at IS NULL AND updated_at < :cutoff) AS due,
    coalesce(sum(octet_length(payload)) FILTER (WHERE payload_pruned_at IS NULL AND updated_at < :cutoff), 0)
        AS due_size,
    count(*) FILTER (WHERE payload_pruned_at IS NOT NULL) AS pruned,
    coalesce(sum(pruned_payload_bytes), 0) AS pruned_size
FROM webhook_events
"""

# A pass stamps every row it prunes with the time it started: one group a pass (a replica's).
PRUNING_PASSES = """
SELECT payload_pruned_at AS pruned_at, count(*) AS count, sum(pruned_payload_bytes) AS size
FROM webhook_events
WHERE payload_pruned_at IS NOT NULL
GROUP BY payload_pruned_at
ORDER BY payload_pruned_at DESC
LIMIT :passes
"""


class EventQueries(Queries):
    async def claim_event(self, account_id: str, event: WebhookEvent, now: datetime) -> bool:
        """Store the event as applied, in the transaction that applies it. False when it was
        applied or ignored before (a replay: change nothing). A rejected event is claimed again:
        a later delivery or an operator's replay re-evaluates it. A concurrent delivery of the
        same event waits on the row and then finds it applied."""
        inserted = await self._execute(
            "INSERT INTO webhook_events (account_id, event_id, type, status, payload, received_at, updated_at) "
            "VALUES (:account_id, :event_id, :type, 'applied', :payload, :received_at, :now) "
            "ON CONFLICT (account_id, event_id) DO NOTHING",
            **_event_params(account_id, event),
            now=now,
        )
        if inserted:
            return True
        reclaimed = await self._execute(
            "UPDATE webhook_events SET status = 'applied', reason = NULL, updated_at = :now "
            "WHERE account_id = :account_id AND event_id = :event_id AND status = 'rejected'",
            account_id=account_id,
            event_id=event.event_id,
            now=now,
        )
        return bool(reclaimed)

    async def record_event(
        self, account_id: str, event: WebhookEvent, status: EventStatus, reason: str | None, now: datetime
    ) -> EventStatus:
        """Store an event that has no effect; DUPLICATE when it was applied or ignored before."""
        row = await self._row(
            "INSERT INTO webhook_events AS w (account_id, event_id, type, status, reason, payload, received_at, "
            "updated_at) VALUES (:account_id, :event_id, :type, :status, :reason, :payload, :received_at, :now) "
            "ON CONFLICT (account_id, event_id) DO UPDATE SET status = EXCLUDED.status, reason = EXCLUDED.reason, "
            "updated_at = EXCLUDED.updated_at WHERE w.status = 'rejected' RETURNING w.status",
            **_event_params(account_id, event),
            status=status.value,
            reason=reason,
            now=now,
        )
        return EventStatus(row["status"]) if row else EventStatus.DUPLICATE

    async def adopt_event(
        self, account_id: str, event_id: str, status: EventStatus, reason: str | None, now: datetime
    ) -> None:
        """A pending event (stored under no account) becomes the account's, applied or rejected,
        in the transaction that applies what it waited for."""
        await self._execute(
            "UPDATE webhook_events SET account_id = :account_id, status = :status, reason = :reason, "
            "updated_at = :now WHERE account_id = '' AND event_id = :event_id AND status = 'pending'",
            account_id=account_id,
            event_id=event_id,
            status=status.value,
            reason=reason,
            now=now,
        )

    async def stored_event(self, event_id: str) -> StoredEvent | None:
        row = await self._row("SELECT * FROM webhook_events WHERE event_id = :event_id LIMIT 1", event_id=event_id)
        return _stored(row) if row else None

    async def prune_payloads(self, cutoff: datetime, now: datetime, limit: int) -> Payloads:
        row = await self._row(PRUNE_PAYLOADS, cutoff=cutoff, now=now, limit=limit)
        assert row is not None
        return Payloads(row["count"], int(row["size"]))

    async def payload_retention(self, cutoff: datetime | None, passes: int) -> PayloadRetention:
        # No cutoff (retention off): `updated_at < NULL` holds for no row, so none is due.
        totals = await self._row(PAYLOAD_RETENTION, cutoff=cutoff)
        assert totals is not None
        latest = await self._rows(PRUNING_PASSES, passes=passes)
        return PayloadRetention(
            kept=Payloads(totals["kept"], int(totals["kept_size"])),
            due=Payloads(totals["due"], int(totals["due_size"])),
            pruned=Payloads(totals["pruned"], int(totals["pruned_size"])),
            passes=[(row["pruned_at"], Payloads(row["count"], int(row["size"]))) for row in latest],
        )


def _event_params(account_id: str, event: WebhookEvent) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "event_id": event.event_id,
        "type": event.type,
        "payload": event.payload,
        "received_at": event.received_at,
    }


def _stored(row: Mapping[str, Any]) -> StoredEvent:
    event = WebhookEvent(row["event_id"], row["type"], bytes(row["payload"]), row["received_at"])
    return StoredEvent(event, row["account_id"], EventStatus(row["status"]), row["reason"])
