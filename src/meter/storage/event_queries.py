"""Queries on stored webhook events: each verified event once, claimed before its effect."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meter.domain.events import EventStatus, StoredEvent, WebhookEvent
from meter.storage.queries import Queries


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
