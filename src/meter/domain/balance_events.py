"""Balance events: the facts meter tells the product about an account, each recorded in the
transaction that made the change it describes (storage/sql/meter_emit.sql), numbered per account.

The names below are the event types as they are stored and sent; each fact has one, written
where the fact is decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from meter.domain.balance import Balance


class EventType(StrEnum):
    PURCHASE_CREDITED = "purchase.credited"  # a paid pack's tokens are in the purchased pool
    PURCHASE_REFUSED = "purchase.refused"  # paid, not credited (the catalog does not sell it so): refund it
    CREDIT_REVERSED = "credit.reversed"  # a refund or a dispute took a payment's tokens back
    DISPUTE_WON = "dispute.won"  # a dispute ended in the account's favour: the frozen tokens are back
    ALLOWANCE_GRANTED = "allowance.granted"  # a period's (or an upgrade's) allowance
    ALLOWANCE_EXPIRED = "allowance.expired"  # what a period left of its allowance, at its end
    PLAN_CHANGED = "plan.changed"
    PLAN_CANCELLED = "plan.cancelled"  # the subscription ended: the account is on the free plan
    WARNING_CROSSED = "balance.warning"  # 80, 90, 95 % or exhausted, once per level and period
    ADJUSTED = "balance.adjusted"  # an operator's Adjust
    DEBT_CREATED = "debt.created"  # the account owes tokens (usage nothing paid for, a refund of spent tokens)
    DEBT_CLEARED = "debt.cleared"  # it owes nothing again


@dataclass(frozen=True)
class BalanceEvent:
    account_id: str
    sequence: int  # 1, 2, 3 … per account, without gaps
    event_id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]  # the fact's amounts and references
    balance: Balance  # right after the change


@dataclass(frozen=True)
class EventPage:
    events: list[BalanceEvent]
    last_sequence: int  # the next page's after_sequence
    more: bool
