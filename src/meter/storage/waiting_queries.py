"""Queries on requests waiting for what they refer to, and the lock that keeps one from being
stored after its payment, invoice or subscription arrived (and so never applied)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meter.storage.queries import Queries


class WaitingQueries(Queries):
    async def lock_key(self, key: str) -> None:
        """Until this transaction ends, no other can store or release a request waiting for `key`:
        the one that stores re-checks for the awaited thing under this lock, and the one that
        brings it takes the lock before looking for what waits."""
        await self._execute("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))", key=key)

    async def insert_waiting(
        self, key: str, event_id: str, kind: str, request: Mapping[str, Any], now: datetime
    ) -> bool:
        return bool(
            await self._execute(
                "INSERT INTO waiting_requests (waits_for, event_id, kind, request, received_at) "
                "VALUES (:key, :event_id, :kind, CAST(:request AS jsonb), :now) ON CONFLICT DO NOTHING",
                key=key,
                event_id=event_id,
                kind=kind,
                request=json.dumps(request),
                now=now,
            )
        )

    async def take_waiting(self, key: str) -> list[tuple[str, str, dict[str, Any]]]:
        """Remove and return (kind, event_id, request) of what waits for `key`, oldest first."""
        rows = await self._rows(
            "WITH taken AS (DELETE FROM waiting_requests WHERE waits_for = :key RETURNING *) "
            "SELECT kind, event_id, request FROM taken ORDER BY received_at, event_id",
            key=key,
        )
        return [(row["kind"], row["event_id"], _json(row["request"])) for row in rows]


def _json(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)
