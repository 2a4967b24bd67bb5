"""Ledger entries: every change of a balance, append-only.

Per account and pool, the sum of the ledger equals the pool's buckets (available + held); for
the debt pool it equals minus the debt. `meter audit` checks exactly that.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from meter.domain.pools import PoolName
from meter.domain.usage import UsageRecord


class EntryKind(enum.StrEnum):
    SUBSCRIPTION_GRANT = "subscription_grant"
    EXPIRY = "expiry"
    USAGE = "usage"
    PURCHASE = "purchase"
    ADJUSTMENT = "adjustment"
    DEBT_PAYMENT = "debt_payment"
    REFUND = "refund"
    DISPUTE_FREEZE = "dispute_freeze"
    DISPUTE_RELEASE = "dispute_release"
    GRANT = "grant"  # a grant's tokens, in its own pool (Grant)
    REVOCATION = "revocation"  # what was left of a revoked grant


@dataclass(frozen=True)
class LedgerEntry:
    kind: EntryKind
    pool: PoolName
    amount: int
    reservation_id: str | None = None
    ref: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class RecordedEntry:
    """An entry as the ledger holds it (ListLedgerEntries): with its id, time and caller, and for
    a usage entry the call it charged."""

    entry_id: int
    created_at: datetime
    kind: EntryKind
    pool: PoolName
    amount: int
    reservation_id: str
    ref: str
    note: str
    caller: str
    usage: UsageRecord | None = None
    grant_id: int = 0  # the grant a PoolName.GRANT entry changed
