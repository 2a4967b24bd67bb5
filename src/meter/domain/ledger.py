"""Ledger entries: every change of a balance, append-only.

Per account and pool, the sum of the ledger equals the pool's buckets (available + held); for
the debt pool it equals minus the debt. `meter audit` checks exactly that.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from meter.domain.pools import PoolName


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


@dataclass(frozen=True)
class LedgerEntry:
    kind: EntryKind
    pool: PoolName
    amount: int
    reservation_id: str | None = None
    ref: str | None = None
    note: str | None = None
