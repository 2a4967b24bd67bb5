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

from meter.domain.amounts import INT64_MAX
from meter.domain.balance import Balance
from meter.domain.digits import whole_number
from meter.domain.errors import InvalidField

XID8_MAX = 2**64 - 1  # PostgreSQL's transaction ids as events record them


class EventType(StrEnum):
    PURCHASE_CREDITED = "purchase.credited"  # a paid pack's tokens are in the purchased pool
    PURCHASE_REFUSED = "purchase.refused"  # paid, not credited (the catalog does not sell it so): refund it
    # a refused payment credited after all (a later event with the terms as sold): do not refund it
    PURCHASE_REFUSAL_RESOLVED = "purchase.refusal_resolved"
    # a refused payment settled by support: refunded whole, or resolved with a note
    PURCHASE_REFUSAL_SETTLED = "purchase.refusal_settled"
    CREDIT_REVERSED = "credit.reversed"  # a refund or a dispute took a payment's tokens back
    DISPUTE_WON = "dispute.won"  # a dispute ended in the account's favour: the frozen tokens are back
    ALLOWANCE_GRANTED = "allowance.granted"  # a period's (or an upgrade's) allowance
    ALLOWANCE_EXPIRED = "allowance.expired"  # what a period left of its allowance, at its end
    PLAN_CHANGED = "plan.changed"
    PLAN_CANCELLED = "plan.cancelled"  # the subscription ended: the account is on the free plan
    PAYMENT_FAILED = "subscription.payment_failed"  # a subscription invoice's payment failed
    SUBSCRIPTION_STATUS_CHANGED = "subscription.status_changed"  # to or from past_due or unpaid
    WARNING_CROSSED = "balance.warning"  # 80, 90, 95 % or exhausted, once per level and period
    EXPIRING = "balance.expiring"  # the month's allowance expires soon with tokens left (meter_tell_expiring)
    BUDGET_WARNING = "budget.warning"  # a budget's period used 80, 90 or 95 % of its cap, once per level
    BUDGET_EXHAUSTED = "budget.exhausted"  # a budget has nothing left to admit, once per period
    GRANT_CREATED = "grant.created"  # an account's own grant (Grant), its tokens in
    GRANT_EXPIRED = "grant.expired"  # what a grant had left at its expiry left the balance
    GRANT_REVOKED = "grant.revoked"  # what a revoked grant had left left the balance
    ADJUSTED = "balance.adjusted"  # an operator's Adjust
    DEBT_CREATED = "debt.created"  # the account owes tokens (usage nothing paid for, a refund of spent tokens)
    DEBT_CLEARED = "debt.cleared"  # it owes nothing again


@dataclass(frozen=True, order=True)
class EventPosition:
    """An event's place among every account's: the transaction that wrote it (PostgreSQL's
    xid8), then the account and its sequence. Written as text, `transaction-sequence-account`."""

    transaction: int
    account_id: str
    sequence: int

    def __str__(self) -> str:
        return f"{self.transaction}-{self.sequence}-{self.account_id}"

    @staticmethod
    def parse(value: str, field: str = "after_position") -> EventPosition:
        """Refused unless each part fits what it is read into: a transaction id is an xid8 (64
        bits, unsigned), a sequence a bigint."""
        transaction, _, rest = value.partition("-")
        sequence, _, account_id = rest.partition("-")
        read_transaction = whole_number(transaction, XID8_MAX)
        read_sequence = whole_number(sequence, INT64_MAX)
        if read_transaction is None or read_sequence is None or not account_id or len(value) > 200:
            raise InvalidField(field, "must be an event's position as meter sent it")
        return EventPosition(read_transaction, account_id, read_sequence)


@dataclass(frozen=True)
class BalanceEvent:
    account_id: str
    sequence: int  # 1, 2, 3 … per account, without gaps
    event_id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]  # the fact's amounts and references
    balance: Balance  # right after the change
    position: EventPosition


@dataclass(frozen=True)
class EventPage:
    events: list[BalanceEvent]
    last_sequence: int  # the next page's after_sequence
    more: bool


def whole_numbers(value: Any) -> Any:
    """An event's data as the product reads it: a Struct holds every number as a double, and the
    whole ones are integers again (1000, not 1000.0), as the webhook body has them."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [whole_numbers(item) for item in value]
    return value
