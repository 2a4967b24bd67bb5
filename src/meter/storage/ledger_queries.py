"""Reading the ledger: one account's entries, newest first, a page at a time (keyset on the
primary key, so the 100th page costs what the first does)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meter.storage.queries import Queries


class LedgerQueries(Queries):
    async def ledger_page(
        self,
        account_id: str,
        *,
        before_entry: int | None,
        limit: int,
        kind: str | None,
        start: datetime | None,
        end: datetime | None,
    ) -> list[Mapping[str, Any]]:
        return await self._rows(
            "SELECT entry_id, created_at, kind, pool, amount, reservation_id, ref, note FROM ledger_entries "
            "WHERE account_id = :account_id "
            "AND (CAST(:before AS bigint) IS NULL OR entry_id < :before) "
            "AND (CAST(:kind AS text) IS NULL OR kind = :kind) "
            "AND (CAST(:start AS timestamptz) IS NULL OR created_at >= :start) "
            "AND (CAST(:end AS timestamptz) IS NULL OR created_at < :end) "
            "ORDER BY entry_id DESC LIMIT :limit",
            account_id=account_id,
            before=before_entry,
            kind=kind,
            start=start,
            end=end,
            limit=limit,
        )

    async def secret(self, name: str) -> bytes:
        row = await self._row("SELECT value FROM meter_secrets WHERE name = :name", name=name)
        assert row is not None, f"migration 0005 creates the {name} secret"
        return bytes(row["value"])
