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


@dataclass(frozen=True)
class Credit:
    """A credit split into what pays the debt and what reaches the pool."""

    entries: list[LedgerEntry]
    debt_paid: int
    to_pool: int


def credit(kind: EntryKind, pool: PoolName, amount: int, debt: int, *, ref: str | None, note: str | None) -> Credit:
    """Credits pay the debt first: an account in debt is made whole before it can spend again."""
    assert amount > 0 and debt >= 0 and pool is not PoolName.DEBT
    paid = min(amount, debt)
    entries = [LedgerEntry(kind, pool, amount, ref=ref, note=note)]
    if paid:
        entries += [
            LedgerEntry(EntryKind.DEBT_PAYMENT, pool, -paid, ref=ref),
            LedgerEntry(EntryKind.DEBT_PAYMENT, PoolName.DEBT, paid, ref=ref),
        ]
    return Credit(entries, paid, amount - paid)
