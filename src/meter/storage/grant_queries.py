"""An account's own grants (migration 0009's grants, on bucket rows named `grant:<id>`): granted
through meter_grant, revoked through meter_revoke_grant, ended at their expiry by meter_end_grants
(the sweeper's and the calls'), and listed with the two pools, as parts of the balance, in the
order Reserve draws them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meter.domain.callers import acting_caller
from meter.domain.grants import Grant, GrantRequest, GrantSource, grant_id_of
from meter.storage.queries import NOW, Queries

# Every pool of the account with tokens left or held (its two pools, and its grants that have not
# ended or still have held parts), in the order Reserve draws them (meter_reserve's ORDER BY).
_LIVE = """
SELECT b.pool, b.source, b.priority, b.expires_at, sum(b.available) AS remaining, sum(b.held) AS held,
       g.tokens, g.reason, g.request_id, g.created_at
FROM buckets AS b
LEFT JOIN grants AS g ON g.account_id = b.account_id AND b.pool = 'grant:' || g.grant_id
WHERE b.account_id = :account_id
GROUP BY b.pool, b.source, b.priority, b.expires_at, b.draw_seq, g.tokens, g.reason, g.request_id, g.created_at
HAVING sum(b.available) + sum(b.held) > 0
ORDER BY b.priority, b.expires_at NULLS LAST, b.draw_seq
"""

_GRANT_COLUMNS = "grant_id, source, tokens, priority, expires_at, reason, request_id, created_at"


class GrantQueries(Queries):
    async def grant(self, request: GrantRequest) -> tuple[str, str | None, Grant | None]:
        """meter_grant's outcome (granted, replayed, request_reused, account_not_found), the field
        a reused request_id differs in, and the grant."""
        row = await self._row(
            f"SELECT g.outcome, g.reused_field, (g.granted).* FROM meter_grant(:account_id, :request_id, "
            f"CAST(:source AS text), :tokens, :priority, :expires_at, :reason, {NOW}, :caller) AS g",
            account_id=request.account_id,
            request_id=request.request_id,
            source=request.source.value,
            tokens=request.tokens,
            priority=request.priority,
            expires_at=request.expires_at,
            reason=request.reason,
            caller=acting_caller(),
        )
        assert row is not None
        granted = _granted(row, remaining=0, held=0) if row["grant_id"] is not None else None
        return str(row["outcome"]), row["reused_field"], granted

    async def granted(self, account_id: str, grant_id: int) -> Grant | None:
        """One grant as granted, with what it has left and holds now."""
        row = await self._row(
            f"SELECT {_GRANT_COLUMNS}, "
            "(SELECT coalesce(sum(b.available), 0) FROM buckets AS b "
            " WHERE b.account_id = g.account_id AND b.pool = 'grant:' || g.grant_id) AS remaining, "
            "(SELECT coalesce(sum(b.held), 0) FROM buckets AS b "
            " WHERE b.account_id = g.account_id AND b.pool = 'grant:' || g.grant_id) AS held "
            "FROM grants AS g WHERE g.account_id = :account_id AND g.grant_id = :grant_id",
            account_id=account_id,
            grant_id=grant_id,
        )
        return _granted(row, remaining=int(row["remaining"]), held=int(row["held"])) if row else None

    async def revoke_grant(self, account_id: str, grant_id: int) -> tuple[str, int]:
        """meter_revoke_grant's outcome (revoked, ended, not_found) and the tokens that left."""
        row = await self._row(
            f"SELECT outcome, tokens FROM meter_revoke_grant(:account_id, :grant_id, {NOW}, :caller)",
            account_id=account_id,
            grant_id=grant_id,
            caller=acting_caller(),
        )
        assert row is not None
        return str(row["outcome"]), int(row["tokens"] or 0)

    async def live_grants(self, account_id: str) -> list[Grant]:
        return [
            Grant(
                grant_id=grant_id_of(row["pool"]),
                source=GrantSource(row["source"]),
                remaining=int(row["remaining"]),
                held=int(row["held"]),
                priority=row["priority"],
                expires_at=row["expires_at"],
                tokens=row["tokens"] or 0,
                reason=row["reason"] or "",
                request_id=row["request_id"] or "",
                created_at=row["created_at"],
            )
            for row in await self._rows(_LIVE, account_id=account_id)
        ]

    async def grants_due(self, limit: int) -> list[str]:
        """Accounts whose next grant expiry has come (the sweeper ends their grants)."""
        rows = await self._rows(
            f"SELECT account_id FROM accounts WHERE next_grant_expiry <= {NOW} ORDER BY next_grant_expiry LIMIT :limit",
            limit=limit,
        )
        return [row["account_id"] for row in rows]


def _granted(row: Mapping[str, Any], *, remaining: int, held: int) -> Grant:
    return Grant(
        grant_id=row["grant_id"],
        source=GrantSource(row["source"]),
        remaining=remaining,
        held=held,
        priority=row["priority"],
        expires_at=row["expires_at"],
        tokens=row["tokens"],
        reason=row["reason"],
        request_id=row["request_id"],
        created_at=row["created_at"],
    )
