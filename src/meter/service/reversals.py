"""ReverseCredit: refunds and disputes take a purchase's tokens back; a won dispute returns them.

Tokens are taken from the purchased pool as far as it has them available; what was already
spent (or is held by calls in flight) becomes debt. Each reversal applies only the change since
the last one seen for that payment, so repeated and out-of-order events change nothing twice.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from meter import metrics
from meter.domain import ids, reversals
from meter.domain.accounts import Account
from meter.domain.amounts import require_tokens
from meter.domain.balance import Balance
from meter.domain.errors import InvalidField, PaymentNotFound
from meter.domain.events import EventStatus, WebhookEvent
from meter.domain.ledger import EntryKind, LedgerEntry
from meter.domain.pools import PoolName, pool_total, rebalance
from meter.service import balance_warnings, events
from meter.service.accounts import credit_pool, locked_current_account
from meter.service.context import Meter
from meter.service.ports import Store


class ReversalKind(enum.Enum):
    REFUND = "refund"
    DISPUTE = "dispute"
    DISPUTE_WON = "dispute_won"


@dataclass(frozen=True)
class Reversed:
    balance: Balance
    tokens: int  # taken back (negative: given back)
    unbilled: int
    event_status: EventStatus | None = None


async def reverse_credit(
    meter: Meter,
    *,
    kind: ReversalKind,
    account_id: str = "",
    payment_ref: str = "",
    payment_intent: str = "",
    amount_minor: int = 0,
    reversal_ref: str = "",
    source_event: WebhookEvent | None = None,
) -> Reversed:
    async def run() -> Reversed:
        events.check_event(source_event)
        if kind is ReversalKind.REFUND:
            require_tokens("amount_minor", amount_minor, minimum=1, maximum=2**62)
        if len(reversal_ref) > 255:
            raise InvalidField("reversal_ref", "at most 255 characters")
        account, ref = await _payment(meter, account_id, payment_ref, payment_intent)
        reversed_ = await meter.storage.transaction(
            lambda store: _reverse(store, account, ref, kind, amount_minor, reversal_ref, source_event)
        )
        if reversed_.tokens > 0:
            metrics.TOKENS_REVERSED.inc(reversed_.tokens)
        await balance_warnings.announce(meter, reversed_.balance)
        return reversed_

    return await events.rejecting(meter, events.event_account(account_id), source_event, run)


async def _payment(meter: Meter, account_id: str, payment_ref: str, payment_intent: str) -> tuple[str, str]:
    """The purchase as (account, payment_ref): named directly, or found by its PaymentIntent."""
    if payment_ref:
        ids.idempotency_key(payment_ref, "payment_ref")
        return ids.account_id(account_id), payment_ref
    ids.idempotency_key(payment_intent, "payment_intent")

    async def lookup(store: Store) -> tuple[str, str] | None:
        return await store.purchase_by_intent(payment_intent)

    found = await meter.storage.transaction(lookup)
    if found is None or (account_id and found[0] != account_id):
        raise PaymentNotFound(paymentIntent=payment_intent)
    return found


async def _reverse(
    store: Store,
    account_id: str,
    payment_ref: str,
    kind: ReversalKind,
    amount_minor: int,
    reversal_ref: str,
    source_event: WebhookEvent | None,
) -> Reversed:
    account, now = await store.account_state(account_id)
    if account is None:
        raise PaymentNotFound(paymentRef=payment_ref)
    claimed = await events.claim(store, account_id, source_event, now)
    status = events.status(source_event, claimed)
    if not claimed:
        return Reversed(await store.balance(account_id), 0, 0, status)
    account = await locked_current_account(store, account, now)
    purchase = await store.lock_purchase(account_id, payment_ref)
    if purchase is None:
        raise PaymentNotFound(paymentRef=payment_ref)
    state = _state(purchase)
    outcome = {
        ReversalKind.REFUND: lambda: reversals.refund(state, amount_minor),
        ReversalKind.DISPUTE: lambda: reversals.dispute(state),
        ReversalKind.DISPUTE_WON: lambda: reversals.dispute_won(state),
    }[kind]()
    await store.save_purchase_reversals(account_id, payment_ref, outcome.state)
    ref = reversal_ref or payment_ref
    unbilled = 0
    if outcome.take > 0:
        entry_kind = EntryKind.REFUND if kind is ReversalKind.REFUND else EntryKind.DISPUTE_FREEZE
        unbilled = await _take_back(store, account, outcome.take, entry_kind, ref, now)
    elif outcome.take < 0:
        await credit_pool(
            store, account, EntryKind.DISPUTE_RELEASE, PoolName.PURCHASED, -outcome.take, now, ref=ref, note=payment_ref
        )
    return Reversed(await store.balance(account_id), outcome.take, unbilled, status)


def _state(purchase: Mapping[str, Any]) -> reversals.PurchaseState:
    return reversals.PurchaseState(
        tokens=purchase["tokens"],
        amount_minor=purchase["amount_minor"],
        refunded_minor=purchase["refunded_minor"],
        refund_reversed_tokens=purchase["refund_reversed_tokens"],
        frozen_tokens=purchase["frozen_tokens"],
    )


async def _take_back(store: Store, account: Account, tokens: int, kind: EntryKind, ref: str, now: datetime) -> int:
    """Remove tokens from the purchased pool; what it lacks becomes debt. Returns the debt added."""
    rows = await store.lock_buckets(account.account_id)
    available = pool_total(rows, PoolName.PURCHASED)
    taken = min(tokens, available)
    rebalance(rows, PoolName.PURCHASED, available - taken)
    await store.write_buckets(account.account_id, rows)
    shortfall = tokens - taken
    await store.append(
        account.account_id,
        [LedgerEntry(kind, PoolName.PURCHASED, -taken, ref=ref), LedgerEntry(kind, PoolName.DEBT, -shortfall, ref=ref)],
        now,
    )
    if shortfall:
        await store.save_account(replace(account, debt=account.debt + shortfall), now)
    return shortfall
