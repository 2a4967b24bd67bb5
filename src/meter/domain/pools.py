"""Pools: what an account's tokens are, by where they came from.

Each pool (allowance, purchased) of an account is split across N bucket rows so that concurrent
holds of one busy account lock different rows; how tokens are drawn from them and spread over
them is decided by the SQL functions of storage/sql (meter_take, meter_spread). Debt is a third
ledger pool whose balance is never positive.
"""

from __future__ import annotations

import enum


class PoolName(enum.StrEnum):
    ALLOWANCE = "allowance"
    PURCHASED = "purchased"
    DEBT = "debt"
    GRANT = "grant"  # one of the account's own grants: its rows and entries are named grant:<id>

    @classmethod
    def stored(cls, name: str) -> PoolName:
        """The pool a stored name is (a grant's, `grant:<id>`, is GRANT: domain.grants reads its id)."""
        return cls.GRANT if name.startswith("grant:") else cls(name)
