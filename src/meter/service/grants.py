"""GrantPeriodAllowance: a paid subscription period's allowance, exactly once.

The invoice names only its subscription; the account is the one SetPlan tied to it. A paid
period the account is in gets its allowance if it has not had it; a later period becomes the
current one (the allowance left expires) and gets its allowance; an older one changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from meter.domain import ids
from meter.domain.balance import Balance
from meter.domain.errors import InvalidField, SubscriptionNotFound
from meter.domain.events import EventStatus, WebhookEvent
from meter.domain.periods import Period, absurd, moves_to
from meter.service import events
from meter.service.accounts import locked_current_account
from meter.service.context import Meter
from meter.service.periods import begin_period
from meter.service.ports import Store


@dataclass(frozen=True)
class PeriodGrant:
    balance: Balance
    granted: bool
    event_status: EventStatus | None = None


async def grant_period_allowance(
    meter: Meter,
    *,
    subscription_ref: str,
    invoice_ref: str,
    period: Period | None,
    account_id: str = "",
    source_event: WebhookEvent | None = None,
) -> PeriodGrant:
    async def run() -> PeriodGrant:
        ids.idempotency_key(subscription_ref, "subscription_ref")
        ids.idempotency_key(invoice_ref, "invoice_ref")
        events.check_event(source_event)
        if period is None:
            raise InvalidField("period_start", "the paid period is required")
        account = await _account_of(meter, subscription_ref, account_id)
        return await meter.storage.transaction(
            lambda store: _grant(store, account, subscription_ref, period, source_event)
        )

    return await events.rejecting(meter, events.event_account(account_id), source_event, run)


async def _account_of(meter: Meter, subscription_ref: str, account_id: str) -> str:
    if account_id:
        return ids.account_id(account_id)

    async def lookup(store: Store) -> str | None:
        return await store.account_by_subscription(subscription_ref)

    found = await meter.storage.transaction(lookup)
    if found is None:
        raise SubscriptionNotFound(subscription_ref)
    return found


async def _grant(
    store: Store, account_id: str, subscription_ref: str, period: Period, source_event: WebhookEvent | None
) -> PeriodGrant:
    account, now = await store.account_state(account_id)
    if account is None or account.subscription_ref != subscription_ref:
        raise SubscriptionNotFound(subscription_ref)
    if problem := absurd(period, now):
        raise InvalidField("period_start", problem)
    claimed = await events.claim(store, account_id, source_event, now)
    status = events.status(source_event, claimed)
    account = await locked_current_account(store, account, now)
    # Stripe's period is the truth: a paid period that is current (or later) than the one the
    # account is in replaces it, even when it differs from the one computed at a boundary.
    granted = claimed and (
        moves_to(account.period, period, now) or (period == account.period and not account.allowance_granted)
    )
    if granted:
        await begin_period(store, replace(account, period=period), now, grant=True)
    return PeriodGrant(await store.balance(account_id), granted, status)
