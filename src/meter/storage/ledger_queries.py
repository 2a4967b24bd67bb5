"""Reading the ledger: one account's entries, newest first, a page at a time (keyset on the
primary key, so the 100th page costs what the first does), usage entries with their call's
record (the committed hold, found by its primary key: the hold part of the entry's reservation id,
read by domain.ids, the one place that knows the id's format)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from meter.domain import ids
from meter.domain.grants import grant_id_of
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
            "SELECT e.entry_id, e.created_at, e.kind, e.pool, e.amount, e.reservation_id, e.ref, e.note, e.caller "
            "FROM ledger_entries AS e WHERE e.account_id = :account_id "
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
        calls = await self._calls(account_id, {hold for row in rows if (hold := _charged_hold(row))})
        return [
            RecordedEntry(
                entry_id=row["entry_id"],
                created_at=row["created_at"],
                kind=EntryKind(row["kind"]),
                pool=PoolName.stored(row["pool"]),
                amount=row["amount"],
                reservation_id=row["reservation_id"] or "",
                ref=row["ref"] or "",
                note=row["note"] or "",
                caller=row["caller"],
                usage=calls.get(hold) if (hold := _charged_hold(row)) else None,
                grant_id=grant_id_of(row["pool"]),
            )
            for row in rows
        ]

    async def _calls(self, account_id: str, hold_ids: set[UUID]) -> dict[UUID, UsageRecord]:
        """The record of each committed call among `hold_ids` (a page's usage entries), by hold id."""
        if not hold_ids:
            return {}
        rows = await self._rows(
            "SELECT h.hold_id, h.model, h.catalog_version, "
            "h.usage_input_tokens, h.usage_output_tokens, h.usage_cached_input_tokens, h.usage_cache_write_tokens, "
            "h.usage_reasoning_tokens, h.charged_tokens, h.cost_micros, h.unbilled_tokens, "
            "h.late, h.labels FROM holds AS h "
            "WHERE h.account_id = :account_id AND h.hold_id = ANY(CAST(:hold_ids AS uuid[]))",
            account_id=account_id,
            hold_ids=sorted(str(hold) for hold in hold_ids),
        )
        return {UUID(str(row["hold_id"])): record for row in rows if (record := _usage_record(row)) is not None}

    async def secret(self, name: str) -> bytes:
        row = await self._row("SELECT value FROM meter_secrets WHERE name = :name", name=name)
        assert row is not None, f"migration 0005 creates the {name} secret"
        return bytes(row["value"])


def _charged_hold(row: Mapping[str, Any]) -> UUID | None:
    """The hold a usage entry charged (None for other entries)."""
    if row["kind"] != EntryKind.USAGE.value or not row["reservation_id"]:
        return None
    return UUID(ids.hold_id(row["reservation_id"]))


def _usage_record(row: Mapping[str, Any]) -> UsageRecord | None:
    usage = usage_from_row(row)
    if usage is None:
        return None
    return UsageRecord(row["model"], row["catalog_version"], usage, labels_from_row(row))
