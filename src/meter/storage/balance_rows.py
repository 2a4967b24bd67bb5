"""A balance read from a row of meter_balance's columns: the hot path's answers, GetBalance's
query in the store, and the balance events' snapshots all read it the same way, from here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from meter.domain.balance import Balance, WarningLevel
from meter.domain.periods import Period


def balance_from_row(account_id: str, row: asyncpg.Record | Mapping[str, Any]) -> Balance:
    """A balance from a row of meter_balance's columns (GetBalance's query, and every answer of
    the hot path)."""
    return Balance(
        account_id=account_id,
        plan_id=row["plan_id"],
        period=Period(row["period_start"], row["period_end"]),
        allowance_total=row["allowance_total"],
        allowance_remaining=int(row["allowance_remaining"]),
        purchased_remaining=int(row["purchased_remaining"]),
        allowance_held=int(row["allowance_held"]),
        purchased_held=int(row["purchased_held"]),
        debt=row["debt"],
        used_this_period=int(row["used"]),
        announced=WarningLevel.from_bits(row["warned"]),
        paid_through=row.get("paid_through"),
        granted_remaining=int(row.get("granted_remaining") or 0),
        granted_held=int(row.get("granted_held") or 0),
    )
