"""Webhook endpoints and their deliveries (the rows meter_emit writes with each event)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meter.domain.webhook_deliveries import Delivery, DeliveryState, DeliveryStatus, Endpoint
from meter.storage.balance_event_queries import event_from_row
from meter.storage.queries import Queries

# The due deliveries of each endpoint that is sent to (not paused, disabled or backed off), at most
# its free places (:per_endpoint less what this replica is sending it), :limit in all, the longest
# due first. Only the oldest pending delivery of an account and endpoint is due (meter_emit queues
# the others, 'infinity'); NOT EXISTS keeps the order all the same while a redelivered range is
# sent. SKIP LOCKED: a replica claiming at the same time takes other rows; the claim moves
# next_attempt_at past the lease, so no one else takes it until the lease runs out.
_CLAIM = """
WITH sending AS (
    SELECT s.endpoint_id, s.sends FROM unnest(CAST(:sending_ids AS text[]), CAST(:sending_counts AS integer[]))
        AS s (endpoint_id, sends)
),
heads AS (
    SELECT h.account_id, h.endpoint_id, h.sequence, h.next_attempt_at
    FROM webhook_endpoints AS w
    LEFT JOIN sending AS s ON s.endpoint_id = w.endpoint_id
    CROSS JOIN LATERAL (
        SELECT d.account_id, d.endpoint_id, d.sequence, d.next_attempt_at FROM webhook_deliveries AS d
        WHERE d.endpoint_id = w.endpoint_id AND d.status = 'pending' AND d.next_attempt_at <= :now
          AND NOT EXISTS (
              SELECT 1 FROM webhook_deliveries AS p
              WHERE p.account_id = d.account_id AND p.endpoint_id = d.endpoint_id AND p.status = 'pending'
                AND p.sequence < d.sequence
          )
        ORDER BY d.next_attempt_at
        LIMIT greatest(:per_endpoint - coalesce(s.sends, 0), 0)
        FOR UPDATE OF d SKIP LOCKED
    ) AS h
    WHERE NOT w.paused AND w.disabled_at IS NULL AND (w.backoff_until IS NULL OR w.backoff_until <= :now)
    ORDER BY h.next_attempt_at
    LIMIT :limit
)
UPDATE webhook_deliveries AS d
SET attempts = d.attempts + 1, next_attempt_at = CAST(:now AS timestamptz) + make_interval(secs => :lease)
FROM heads, balance_events AS e, webhook_endpoints AS w
WHERE d.account_id = heads.account_id AND d.endpoint_id = heads.endpoint_id AND d.sequence = heads.sequence
  AND e.account_id = d.account_id AND e.sequence = d.sequence AND w.endpoint_id = d.endpoint_id
RETURNING d.endpoint_id, d.attempts, w.url, w.secret, w.timeouts, e.account_id, e.sequence, e.event_id, e.type,
          e.occurred_at, e.payload, CAST(e.transaction_id AS text) AS transaction_id
"""

# An attempt's end, unless the delivery was claimed again since (its attempts moved on).
_FINISH = """
UPDATE webhook_deliveries SET status = :status, last_error = :error,
    delivered_at = CASE WHEN :status = 'delivered' THEN CAST(:now AS timestamptz) END,
    next_attempt_at = coalesce(CAST(:retry_at AS timestamptz), next_attempt_at)
WHERE account_id = :account_id AND endpoint_id = :endpoint_id AND sequence = :sequence
  AND attempts = :attempt AND status = 'pending'
"""

# Once a delivery is done (delivered or dead), the oldest pending one of its account and endpoint
# is due, if it was queued. meter_emit locks that row FOR SHARE while it queues one behind it, so a
# delivery queued by a change not yet committed is seen here once it is.
_DUE_NEXT = """
UPDATE webhook_deliveries SET next_attempt_at = :now
WHERE account_id = :account_id AND endpoint_id = :endpoint_id AND next_attempt_at = 'infinity'
  AND sequence = (
      SELECT min(sequence) FROM webhook_deliveries
      WHERE account_id = :account_id AND endpoint_id = :endpoint_id AND status = 'pending'
  )
"""

# No answer within the timeout: the endpoint is sent nothing for the timeout, then twice as long
# after each further one, up to :most seconds. Once per wave: the other sends in flight when it
# was backed off time out too, and do not lengthen it.
_BACK_OFF = """
UPDATE webhook_endpoints
SET timeouts = timeouts + 1,
    backoff_until = CAST(:now AS timestamptz) + make_interval(secs => least(:first * power(2, timeouts), :most))
WHERE endpoint_id = :endpoint_id AND (backoff_until IS NULL OR backoff_until <= :now)
"""

_ENDPOINT_COLUMNS = (
    "endpoint_id, url, event_types, paused, created_at, disabled_at, disabled_reason, timeouts, backoff_until"
)

# Every event of the range that the endpoint wants, pending again from the first attempt. The
# range's first is due unless a pending delivery of the account comes before it (locked FOR SHARE,
# as meter_emit does, so that it is not done unseen meanwhile); the rest are queued behind it.
_REDELIVER = """
WITH earlier AS (
    SELECT d.sequence FROM webhook_deliveries AS d
    WHERE d.account_id = :account_id AND d.endpoint_id = :endpoint_id AND d.status = 'pending'
      AND d.sequence < :first
    ORDER BY d.sequence
    LIMIT 1
    FOR SHARE
),
wanted AS (
    SELECT e.account_id, w.endpoint_id, e.sequence, min(e.sequence) OVER () AS first_sequence
    FROM balance_events AS e, webhook_endpoints AS w
    WHERE w.endpoint_id = :endpoint_id AND e.account_id = :account_id AND e.sequence BETWEEN :first AND :last
      AND (cardinality(w.event_types) = 0 OR e.type = ANY(w.event_types))
)
INSERT INTO webhook_deliveries (account_id, endpoint_id, sequence, next_attempt_at)
SELECT account_id, endpoint_id, sequence,
       CASE WHEN sequence = first_sequence AND NOT EXISTS (SELECT 1 FROM earlier) THEN CAST(:now AS timestamptz)
            ELSE 'infinity' END
FROM wanted
ON CONFLICT (account_id, endpoint_id, sequence) DO UPDATE
SET status = 'pending', attempts = 0, next_attempt_at = excluded.next_attempt_at, last_error = NULL,
    delivered_at = NULL
"""

# Queued deliveries with nothing pending before them: due. Nothing this version does leaves one;
# a replica of the version before (which did not queue) may, while both run after the migration.
_STRANDED = """
UPDATE webhook_deliveries AS d SET next_attempt_at = :now
WHERE d.status = 'pending' AND d.next_attempt_at = 'infinity' AND NOT EXISTS (
    SELECT 1 FROM webhook_deliveries AS p
    WHERE p.account_id = d.account_id AND p.endpoint_id = d.endpoint_id AND p.status = 'pending'
      AND p.sequence < d.sequence
)
"""

_STATES = """
SELECT d.endpoint_id, d.account_id, d.sequence, e.event_id, e.type, d.status, d.attempts,
       nullif(d.next_attempt_at, 'infinity') AS next_attempt_at, d.last_error, d.delivered_at
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
        rows = await self._rows(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at")
        return [Endpoint(**{**row, "event_types": tuple(row["event_types"])}) for row in rows]

    async def pause_endpoint(self, endpoint_id: str, paused: bool) -> bool:
        """Paused, or resumed: sent to again at once (not disabled, not backed off any more)."""
        return bool(
            await self._execute(
                "UPDATE webhook_endpoints SET paused = :paused, "
                "disabled_at = CASE WHEN :paused THEN disabled_at END, "
                "disabled_reason = CASE WHEN :paused THEN disabled_reason END, "
                "timeouts = CASE WHEN :paused THEN timeouts ELSE 0 END, "
                "backoff_until = CASE WHEN :paused THEN backoff_until END "
                "WHERE endpoint_id = :endpoint_id",
                endpoint_id=endpoint_id,
                paused=paused,
            )
        )

    async def back_off_endpoint(
        self, endpoint_id: str, now: datetime, first_seconds: float, most_seconds: float
    ) -> None:
        await self._execute(_BACK_OFF, endpoint_id=endpoint_id, now=now, first=first_seconds, most=most_seconds)

    async def endpoint_answered(self, endpoint_id: str) -> None:
        """An answer in time: the endpoint is not backed off any more."""
        await self._execute(
            "UPDATE webhook_endpoints SET timeouts = 0, backoff_until = NULL WHERE endpoint_id = :e AND timeouts > 0",
            e=endpoint_id,
        )

    async def disable_endpoint(self, endpoint_id: str, now: datetime, reason: str) -> None:
        await self._execute(
            "UPDATE webhook_endpoints SET disabled_at = :now, disabled_reason = :reason "
            "WHERE endpoint_id = :e AND disabled_at IS NULL",
            e=endpoint_id,
            now=now,
            reason=reason,
        )

    async def remove_endpoint(self, endpoint_id: str) -> int | None:
        """Its deliveries go with it (their count), or None: no such endpoint."""
        dropped = await self._execute("DELETE FROM webhook_deliveries WHERE endpoint_id = :e", e=endpoint_id)
        removed = await self._execute("DELETE FROM webhook_endpoints WHERE endpoint_id = :e", e=endpoint_id)
        return dropped if removed else None

    async def claim_deliveries(
        self, now: datetime, lease_seconds: float, limit: int, per_endpoint: int, sending: Mapping[str, int]
    ) -> list[Delivery]:
        rows = await self._rows(
            _CLAIM,
            now=now,
            lease=lease_seconds,
            limit=limit,
            per_endpoint=per_endpoint,
            sending_ids=list(sending),
            sending_counts=list(sending.values()),
        )
        return [
            Delivery(
                row["endpoint_id"],
                row["url"],
                row["secret"],
                event_from_row(row["account_id"], row),
                row["attempts"],
                row["timeouts"],
            )
            for row in rows
        ]

    async def finish_delivery(
        self, delivery: Delivery, now: datetime, *, error: str | None, retry_at: datetime | None
    ) -> bool:
        """Record an attempt's end, unless the delivery was claimed again since (a lease that ran
        out): the later claim's attempt decides. Once it is done, the account's next delivery to
        the endpoint is due."""
        status = (
            DeliveryStatus.DELIVERED if error is None else DeliveryStatus.PENDING if retry_at else DeliveryStatus.DEAD
        )
        where = {
            "account_id": delivery.event.account_id,
            "endpoint_id": delivery.endpoint_id,
            "now": now,
        }
        recorded = await self._execute(
            _FINISH,
            status=status.value,
            error=error,
            retry_at=retry_at,
            sequence=delivery.event.sequence,
            attempt=delivery.attempt,
            **where,
        )
        if recorded and status is not DeliveryStatus.PENDING:
            await self._execute(_DUE_NEXT, **where)
        return bool(recorded)

    async def redeliver(self, endpoint_id: str, account_id: str, first: int, last: int, now: datetime) -> int:
        return await self._execute(
            _REDELIVER, endpoint_id=endpoint_id, account_id=account_id, first=first, last=last, now=now
        )

    async def due_stranded(self, now: datetime) -> int:
        return await self._execute(_STRANDED, now=now)

    async def redeliver_dead(self, endpoint_id: str, now: datetime) -> int:
        """Due at once, each: the claim's NOT EXISTS keeps them behind an earlier pending one."""
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
