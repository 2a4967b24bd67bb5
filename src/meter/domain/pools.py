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
