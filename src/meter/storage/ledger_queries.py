"""Reading the ledger: one account's entries, newest first, a page at a time (keyset on the
primary key, so the 100th page costs what the first does), usage entries with their call's
record (the committed hold, found by its primary key)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meter.domain.ledger import EntryKind, RecordedEntry
from meter.domain.pools import PoolName
from meter.domain.usage import UsageRecord
from meter.storage.hold_queries import labels_from_row, usage_from_row
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
    ) -> list[RecordedEntry]:
        rows = await self._rows(
            "SELECT e.entry_id, e.created_at, e.kind, e.pool, e.amount, e.reservation_id, e.ref, e.note, e.caller, "
            "h.model, h.catalog_version, h.usage_input_tokens, h.usage_output_tokens, h.charged_tokens, "
            "h.cost_micros, h.unbilled_tokens, h.late, h.labels FROM ledger_entries AS e "
            "LEFT JOIN holds AS h ON e.kind = 'usage' AND h.account_id = e.account_id "
            "AND h.hold_id = CAST(split_part(e.reservation_id, '/', 2) AS uuid) "
            "WHERE e.account_id = :account_id "
            "AND (CAST(:before AS bigint) IS NULL OR e.entry_id < :before) "
            "AND (CAST(:kind AS text) IS NULL OR e.kind = :kind) "
            "AND (CAST(:start AS timestamptz) IS NULL OR e.created_at >= :start) "
            "AND (CAST(:end AS timestamptz) IS NULL OR e.created_at < :end) "
            "ORDER BY e.entry_id DESC LIMIT :limit",
            account_id=account_id,
            before=before_entry,
            kind=kind,
            start=start,
            end=end,
            limit=limit,
        )
        return [
            RecordedEntry(
                entry_id=row["entry_id"],
                created_at=row["created_at"],
                kind=EntryKind(row["kind"]),
                pool=PoolName(row["pool"]),
                amount=row["amount"],
                reservation_id=row["reservation_id"] or "",
                ref=row["ref"] or "",
                note=row["note"] or "",
                caller=row["caller"],
                usage=_usage_record(row),
            )
            for row in rows
        ]

    async def secret(self, name: str) -> bytes:
        row = await self._row("SELECT value FROM meter_secrets WHERE name = :name", name=name)
        assert row is not None, f"migration 0005 creates the {name} secret"
        return bytes(row["value"])


def _usage_record(row: Mapping[str, Any]) -> UsageRecord | None:
    usage = usage_from_row(row)
    if usage is None:
        return None
    return UsageRecord(row["model"], row["catalog_version"], usage, labels_from_row(row))
