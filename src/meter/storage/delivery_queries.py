"""Webhook endpoints and their deliveries (the rows meter_emit writes with each event)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meter.domain.webhook_deliveries import Delivery, DeliveryState, DeliveryStatus, Endpoint
from meter.storage.balance_event_queries import event_from_row
from meter.storage.queries import Queries

# The oldest pending delivery of each account and endpoint that is due: the others wait behind it
# (in order per account). SKIP LOCKED: a replica claiming at the same time takes other rows; the
# claim moves next_attempt_at past the lease, so no one else takes it until the lease runs out.
_CLAIM = """
WITH heads AS (
    SELECT d.account_id, d.endpoint_id, d.sequence FROM webhook_deliveries AS d
    WHERE d.status = 'pending' AND d.next_attempt_at <= :now
      AND NOT EXISTS (
          SELECT 1 FROM webhook_deliveries AS p
          WHERE p.account_id = d.account_id AND p.endpoint_id = d.endpoint_id AND p.status = 'pending'
            AND p.sequence < d.sequence
      )
      AND EXISTS (SELECT 1 FROM webhook_endpoints AS w WHERE w.endpoint_id = d.endpoint_id AND NOT w.paused)
    ORDER BY d.next_attempt_at
    LIMIT :limit
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries AS d
SET attempts = d.attempts + 1, next_attempt_at = CAST(:now AS timestamptz) + make_interval(secs => :lease)
FROM heads, balance_events AS e, webhook_endpoints AS w
WHERE d.account_id = heads.account_id AND d.endpoint_id = heads.endpoint_id AND d.sequence = heads.sequence
  AND e.account_id = d.account_id AND e.sequence = d.sequence AND w.endpoint_id = d.endpoint_id
RETURNING d.endpoint_id, d.attempts, w.url, w.secret, e.account_id, e.sequence, e.event_id, e.type, e.occurred_at,
          e.payload, CAST(e.transaction_id AS text) AS transaction_id
"""

# Every event of the range that the endpoint wants, pending again from the first attempt.
_REDELIVER = """
INSERT INTO webhook_deliveries (account_id, endpoint_id, sequence, next_attempt_at)
SELECT e.account_id, w.endpoint_id, e.sequence, :now
FROM balance_events AS e, webhook_endpoints AS w
WHERE w.endpoint_id = :endpoint_id AND e.account_id = :account_id AND e.sequence BETWEEN :first AND :last
  AND (cardinality(w.event_types) = 0 OR e.type = ANY(w.event_types))
ON CONFLICT (account_id, endpoint_id, sequence) DO UPDATE
SET status = 'pending', attempts = 0, next_attempt_at = excluded.next_attempt_at, last_error = NULL,
    delivered_at = NULL
"""

_STATES = """
SELECT d.endpoint_id, d.account_id, d.sequence, e.event_id, e.type, d.status, d.attempts, d.next_attempt_at,
       d.last_error, d.delivered_at
FROM webhook_deliveries AS d JOIN balance_events AS e USING (account_id, sequence)
WHERE (CAST(:endpoint_id AS text) IS NULL OR d.endpoint_id = :endpoint_id)
  AND (CAST(:status AS text) IS NULL OR d.status = :status)
  AND (CAST(:account_id AS text) IS NULL OR d.account_id = :account_id)
ORDER BY d.next_attempt_at, d.account_id, d.sequence
LIMIT :limit
"""


class DeliveryQueries(Queries):
    async def insert_endpoint(self, endpoint: Endpoint, secret: str) -> bool:
        return bool(
            await self._execute(
                "INSERT INTO webhook_endpoints (endpoint_id, url, secret, event_types, paused, created_at) "
                "VALUES (:endpoint_id, :url, :secret, :event_types, :paused, :created_at) "
                "ON CONFLICT (endpoint_id) DO NOTHING",
                endpoint_id=endpoint.endpoint_id,
                url=endpoint.url,
                secret=secret,
                event_types=list(endpoint.event_types),
                paused=endpoint.paused,
                created_at=endpoint.created_at,
            )
        )

    async def endpoints(self) -> list[Endpoint]:
        rows = await self._rows(
            "SELECT endpoint_id, url, event_types, paused, created_at FROM webhook_endpoints ORDER BY created_at"
        )
        return [Endpoint(**{**row, "event_types": tuple(row["event_types"])}) for row in rows]

    async def pause_endpoint(self, endpoint_id: str, paused: bool) -> bool:
        return bool(
            await self._execute(
                "UPDATE webhook_endpoints SET paused = :paused WHERE endpoint_id = :endpoint_id",
                endpoint_id=endpoint_id,
                paused=paused,
            )
        )

    async def remove_endpoint(self, endpoint_id: str) -> int | None:
        """Its deliveries go with it (their count), or None: no such endpoint."""
        dropped = await self._execute("DELETE FROM webhook_deliveries WHERE endpoint_id = :e", e=endpoint_id)
        removed = await self._execute("DELETE FROM webhook_endpoints WHERE endpoint_id = :e", e=endpoint_id)
        return dropped if removed else None

    async def claim_deliveries(self, now: datetime, lease_seconds: float, limit: int) -> list[Delivery]:
        rows = await self._rows(_CLAIM, now=now, lease=lease_seconds, limit=limit)
        return [
            Delivery(
                row["endpoint_id"], row["url"], row["secret"], event_from_row(row["account_id"], row), row["attempts"]
            )
            for row in rows
        ]

    async def finish_delivery(
        self, delivery: Delivery, now: datetime, *, error: str | None, retry_at: datetime | None
    ) -> bool:
        """Record an attempt's end, unless the delivery was claimed again since (a lease that ran
        out): the later claim's attempt decides."""
        status = (
            DeliveryStatus.DELIVERED if error is None else DeliveryStatus.PENDING if retry_at else DeliveryStatus.DEAD
        )
        return bool(
            await self._execute(
                "UPDATE webhook_deliveries SET status = :status, last_error = :error, "
                "delivered_at = CASE WHEN :status = 'delivered' THEN CAST(:now AS timestamptz) END, "
                "next_attempt_at = coalesce(CAST(:retry_at AS timestamptz), next_attempt_at) "
                "WHERE account_id = :account_id AND endpoint_id = :endpoint_id AND sequence = :sequence "
                "AND attempts = :attempt AND status = 'pending'",
                status=status.value,
                error=error,
                now=now,
                retry_at=retry_at,
                account_id=delivery.event.account_id,
                endpoint_id=delivery.endpoint_id,
                sequence=delivery.event.sequence,
                attempt=delivery.attempt,
            )
        )

    async def redeliver(self, endpoint_id: str, account_id: str, first: int, last: int, now: datetime) -> int:
        return await self._execute(
            _REDELIVER, endpoint_id=endpoint_id, account_id=account_id, first=first, last=last, now=now
        )

    async def redeliver_dead(self, endpoint_id: str, now: datetime) -> int:
        return await self._execute(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = :now, "
            "last_error = NULL WHERE endpoint_id = :endpoint_id AND status = 'dead'",
            endpoint_id=endpoint_id,
            now=now,
        )

    async def event_position(self, event_id: str) -> tuple[str, int] | None:
        row = await self._row(
            "SELECT account_id, sequence FROM balance_events WHERE event_id = CAST(:event_id AS uuid)",
            event_id=event_id,
        )
        return (row["account_id"], row["sequence"]) if row else None

    async def delivery_states(
        self, endpoint_id: str | None, status: DeliveryStatus | None, account_id: str | None, limit: int
    ) -> list[DeliveryState]:
        rows = await self._rows(
            _STATES,
            endpoint_id=endpoint_id,
            status=status.value if status else None,
            account_id=account_id,
            limit=limit,
        )
        return [_state(row) for row in rows]


def _state(row: Mapping[str, Any]) -> DeliveryState:
    return DeliveryState(**{**row, "event_id": str(row["event_id"]), "status": DeliveryStatus(row["status"])})
