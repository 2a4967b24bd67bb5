"""SetPlan: an account's plan and billing period.

Without a subscription, creating an account grants its plan's allowance for the calendar month
(or the period given), and each new period grants it again. With a subscription, the allowance
of a period is granted when its invoice is paid (GrantPeriodAllowance); SetPlan only moves the
account to the subscription's plan and period. On an existing account an upgrade grants the
difference at once (if the period's allowance was granted), a downgrade applies from the next
period, and a new billing period is a boundary: the allowance left expires. A cancelled
subscription returns the account to the catalog's default plan (the free tier); the allowance left
of its paid period ends at once or with that period, as the cancelled plan's `cancelled_allowance`
says. An event older than the one applied changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from meter.domain import ids
from meter.domain.accounts import Account
from meter.domain.amounts import require_tokens
from meter.domain.balance import Balance
from meter.domain.balance_events import EventType
from meter.domain.errors import InvalidField
from meter.domain.events import EventStatus, WebhookEvent
from meter.domain.holds import ExpiredHolds
from meter.domain.limits import RateLimits
from meter.domain.periods import Period, absurd, calendar_month, moves_to
from meter.domain.plans import CancelledAllowance
from meter.service import balance_warnings, events, waiting
from meter.service.accounts import locked_current_account, open_account
from meter.service.context import Meter
from meter.service.periods import anchor_for, begin_month
from meter.service.ports import Store

MAX_STATUS = 64
# Stripe's statuses of a subscription whose payments are failing: told when one begins or ends.
FAILING_STATUSES = frozenset({"past_due", "unpaid"})


@dataclass(frozen=True)
class PlanChange:
    balance: Balance
    applied: bool
    event_status: EventStatus | None = None


# SetPlan's choice for the account's expired holds: its own setting, its plan's, or unchanged.
ExpiredHoldsChoice = ExpiredHolds | Literal["plan", "keep"]


@dataclass(frozen=True)
class PlanRequest:
    account_id: str
    plan_id: str
    period: Period | None
    subscription_ref: str | None
    event_time: datetime | None
    monthly_allowance: int
    expire_allowance_now: bool
    limits: RateLimits | None = None  # the account's own (per-account plans); None: keep them
    expired_holds: ExpiredHoldsChoice = "keep"
    subscription_cancelled: bool = False  # to the default plan; the allowance left ends as the plan says
    convert_allowance_days: int | None = None  # cancelled: what is left becomes a grant living this long
    subscription_status: str = ""  # Stripe's (active, past_due, unpaid, ...); "": not told


async def set_plan(
    meter: Meter,
    *,
    account_id: str,
    plan_id: str,
    period: Period | None = None,
    subscription_ref: str = "",
    event_time: datetime | None = None,
    monthly_allowance_tokens: int = 0,
    expire_allowance_now: bool = False,
    source_event: WebhookEvent | None = None,
    limits: RateLimits | None = None,
    stripe_prices: Sequence[str] = (),
    expired_holds: ExpiredHoldsChoice = "keep",
    subscription_cancelled: bool = False,
    subscription_status: str = "",
) -> PlanChange:
    async def run() -> PlanChange:
        ids.account_id(account_id)
        events.check_event(source_event)
        plan = _plan_named(meter, plan_id, stripe_prices, subscription_cancelled)
        if len(subscription_ref) > 255:
            raise InvalidField("subscription_ref", "at most 255 characters")
        if subscription_status and (
            len(subscription_status) > MAX_STATUS or not subscription_status.replace("_", "").isalnum()
        ):
            raise InvalidField("subscription_status", f"a Stripe subscription status, at most {MAX_STATUS} characters")
        request = PlanRequest(
            account_id=account_id,
            plan_id=plan,
            period=period,
            subscription_ref=subscription_ref or None,
            event_time=event_time,
            monthly_allowance=_allowance(meter, plan, monthly_allowance_tokens),
            expire_allowance_now=expire_allowance_now,
            limits=_own_limits(meter, plan, limits),
            expired_holds=expired_holds,
            subscription_cancelled=subscription_cancelled,
            subscription_status=subscription_status,
        )
        change = await meter.storage.transaction(lambda store: _apply(meter, store, request, source_event))
        await balance_warnings.announce(meter, change.balance)
        return change

    return await events.rejecting(meter, events.event_account(account_id), source_event, run)


def _plan_named(meter: Meter, plan_id: str, stripe_prices: Sequence[str], subscription_cancelled: bool) -> str:
    """A subscription is on the plan its price is sold as, not the one its metadata names; a
    cancelled one leaves the account on the default plan."""
    if subscription_cancelled:
        if plan_id not in ("", meter.catalog.default_plan) or stripe_prices:
            default = meter.catalog.default_plan
            raise InvalidField("plan_id", f"a cancelled subscription returns to {default!r}: leave it out")
        return meter.catalog.default_plan
    return meter.catalog.plan_sold_at(stripe_prices, plan_id).id if stripe_prices else plan_id


def _cancellation(meter: Meter, request: PlanRequest, account: Account | None) -> PlanRequest:
    """A cancelled subscription's allowance left ends now, or lasts its paid months when the
    cancelled plan's catalog entry says so (and the current month's allowance was paid and
    granted): a yearly plan's months go on until the paid year ends."""
    if not request.subscription_cancelled or account is None:
        return request
    cancelled = meter.catalog.plans.get(account.plan_id)
    lasts = (
        cancelled is not None
        and cancelled.cancelled_allowance is CancelledAllowance.ENDS_WITH_PERIOD
        and account.allowance_granted
    )
    converts = cancelled is not None and cancelled.cancelled_allowance is CancelledAllowance.CONVERTS
    days = cancelled.converted_allowance_days if converts and cancelled is not None else None
    return replace(request, subscription_ref=None, expire_allowance_now=not lasts, convert_allowance_days=days)


async def _apply(meter: Meter, store: Store, request: PlanRequest, source_event: WebhookEvent | None) -> PlanChange:
    account, now = await store.account_state(request.account_id)
    if request.period is not None and (problem := absurd(request.period, now)):
        raise InvalidField("period_start", problem)
    claimed = await events.claim(store, request.account_id, source_event, now)
    status = events.status(source_event, claimed)
    if not claimed:
        return PlanChange(await store.balance(request.account_id), applied=False, event_status=status)
    wanted = Account(
        account_id=request.account_id,
        plan_id=request.plan_id,
        monthly_allowance=request.monthly_allowance,
        period=request.period or calendar_month(now),  # a placeholder: the month is SQL's to place
        month_anchor=request.period.start if request.period else None,
        billing=request.period,
        allowance_total=0,
        debt=0,
        bucket_count=meter.parameters.buckets,
        subscription_ref=request.subscription_ref,
        plan_event_time=request.event_time,
        limits=_kept_limits(meter, request, account),
        expired_holds=_own_expired_holds(request, account),
        rollover=meter.catalog.plan(request.plan_id).rollover,
    )
    if account is None:
        await open_account(store, wanted, now)
        await _plan_event(store, request, None, now)
        await _subscription_status(meter, store, request, now)
        await _release_invoices(meter, store, request, now)
        return PlanChange(await store.balance(request.account_id), applied=True, event_status=status)
    account = await locked_current_account(store, account, now)
    if request.event_time and account.plan_event_time and request.event_time < account.plan_event_time:
        return PlanChange(await store.balance(request.account_id), applied=False, event_status=status)
    request = _cancellation(meter, request, account)
    wanted = replace(wanted, subscription_ref=request.subscription_ref)
    # The status first: a month the change begins sees the grace a failed renewal starts.
    graced = await _subscription_status(meter, store, request, now)
    await _change(store, account, wanted, request, now)
    if graced:
        await store.begin_month(account.account_id, now)  # a month that began unpaid gets its allowance now
    await _plan_event(store, request, account.plan_id, now)
    await _release_invoices(meter, store, request, now)
    return PlanChange(await store.balance(request.account_id), applied=True, event_status=status)


async def _plan_event(store: Store, request: PlanRequest, previous_plan_id: str | None, now: datetime) -> None:
    """plan.cancelled when the subscription ended (or the allowance was ended by hand), else
    plan.changed, also for the same plan again (a renewed subscription, another period)."""
    ended = request.expire_allowance_now or request.subscription_cancelled
    await store.emit(
        request.account_id,
        EventType.PLAN_CANCELLED if ended else EventType.PLAN_CHANGED,
        {
            "plan_id": request.plan_id,
            "previous_plan_id": previous_plan_id,
            "subscription_ref": request.subscription_ref,
        },
        now,
    )


async def _subscription_status(meter: Meter, store: Store, request: PlanRequest, now: datetime) -> bool:
    """Remember the subscription's status (none once it is cancelled); a change to or from one
    whose payments are failing (past_due, unpaid) is told as subscription.status_changed: the
    product asks for another card, or knows the card works again. Past due on a plan with a grace
    (past_due_grace_days), the months that begin within that many days of the failure are granted
    as if paid (meter_begin_month reads grace_until); True when that grace starts now."""
    if request.subscription_cancelled or request.subscription_ref is None:
        await store.save_subscription_state(request.account_id, None, None)
        return False
    if not request.subscription_status:
        return False
    previous, grace_until = await store.subscription_state(request.account_id)
    grace_days = meter.catalog.plan(request.plan_id).past_due_grace_days
    starts = request.subscription_status == "past_due" and grace_days is not None and grace_until is None
    if starts:
        assert grace_days is not None
        grace_until = now + timedelta(days=grace_days)
    elif request.subscription_status != "past_due":
        grace_until = None
    await store.save_subscription_state(request.account_id, request.subscription_status, grace_until)
    failing = {request.subscription_status, previous} & FAILING_STATUSES
    if previous != request.subscription_status and failing:
        await store.emit(
            request.account_id,
            EventType.SUBSCRIPTION_STATUS_CHANGED,
            {
                "subscription_ref": request.subscription_ref,
                "status": request.subscription_status,
                "previous_status": previous,
                "grace_until": grace_until.isoformat() if grace_until else None,
            },
            now,
        )
    return starts


async def _release_invoices(meter: Meter, store: Store, request: PlanRequest, now: datetime) -> None:
    """Invoices of this subscription that arrived before it was linked are recorded now."""
    if request.subscription_ref:
        key = waiting.subscription_key(request.subscription_ref)
        await waiting.release(meter, store, request.account_id, key, now)


def _own_limits(meter: Meter, plan_id: str, limits: RateLimits | None) -> RateLimits | None:
    """Own limits only for a plan set per account; each a whole number of at least 0 (0: none)."""
    if limits is None:
        return None
    if not meter.catalog.plan(plan_id).per_account:
        raise InvalidField("limits", f"plan {plan_id!r} has its limits in the catalog; leave limits out")
    values = {}
    for name in ("requests_per_minute", "tokens_per_minute", "concurrent_holds"):
        value = getattr(limits, name)
        values[name] = require_tokens(f"limits.{name}", value or 0, minimum=0, maximum=2**62) or None
    return RateLimits(**values)


def _kept_limits(meter: Meter, request: PlanRequest, account: Account | None) -> RateLimits:
    """The account's own limits after the change: the new ones if given; else those it has, as
    long as it stays on a plan set per account (a catalog plan brings its own)."""
    if request.limits is not None:
        return request.limits
    if account is not None and meter.catalog.plan(request.plan_id).per_account:
        return account.limits
    return RateLimits()


def _own_expired_holds(request: PlanRequest, account: Account | None) -> ExpiredHolds | None:
    """The account's own setting after the change: as asked, or the one it had ("keep")."""
    if request.expired_holds == "keep":
        return account.expired_holds if account is not None else None
    return None if request.expired_holds == "plan" else request.expired_holds


def _allowance(meter: Meter, plan_id: str, monthly_allowance_tokens: int) -> int:
    plan = meter.catalog.plan(plan_id)
    if plan.per_account:
        return require_tokens(
            "monthly_allowance_tokens", monthly_allowance_tokens, minimum=0, maximum=meter.parameters.max_credit_tokens
        )
    if monthly_allowance_tokens:
        raise InvalidField("monthly_allowance_tokens", f"plan {plan_id!r} has its allowance in the catalog; leave it 0")
    return plan.monthly_allowance_tokens


async def _change(store: Store, account: Account, wanted: Account, request: PlanRequest, now: datetime) -> None:
    changed = replace(
        account,
        plan_id=wanted.plan_id,
        monthly_allowance=wanted.monthly_allowance,
        subscription_ref=wanted.subscription_ref,
        plan_event_time=wanted.plan_event_time or account.plan_event_time,
        limits=wanted.limits,
        expired_holds=wanted.expired_holds,
        rollover=wanted.rollover,
    )
    if request.expire_allowance_now:
        # Cancelled: what is left of the allowance expires now (or, when the plan converts it,
        # becomes a grant that lives on); calendar months from here on.
        if request.convert_allowance_days is not None:
            await store.convert_allowance(account.account_id, now + timedelta(days=request.convert_allowance_days), now)
        unpaid = replace(changed, month_anchor=None, billing=None, paid_through=None, allowance_after_paid=None)
        await begin_month(store, unpaid, now, expire_now=True)
        return
    if request.subscription_cancelled:
        # Cancelled, the allowance lasting its paid months: the cancelled plan's allowance each
        # month until paid_through, then the default plan's in calendar months (meter_begin_month).
        lasting = replace(
            changed,
            monthly_allowance=account.monthly_allowance,
            rollover=account.rollover,
            paid_through=account.paid_through or account.period.end,
            allowance_after_paid=wanted.monthly_allowance,
        )
        await store.save_plan(lasting, now)
        return
    if request.period is not None and moves_to(account.billing or account.period, request.period, now):
        anchor = await anchor_for(store, account, request.period)
        moved = replace(changed, billing=request.period, month_anchor=anchor)
        if (await store.allowance_month(anchor, now)) != account.period:
            await begin_month(store, moved, now)
        else:
            await store.save_plan(moved, now)
        return
    await store.save_plan(changed, now)
    # An upgrade grants this month the difference at once (a subscriber's once the month is paid),
    # less what refunds withheld from the month as from its grant; later months get the new plan's
    # allowance, as a downgrade's does from the next month.
    upgrade = changed.monthly_allowance - account.allowance_withheld - account.allowance_total
    if upgrade > 0 and (account.allowance_granted or not changed.subscription_managed):
        ref = f"upgrade:{changed.plan_id}:{account.period.start.isoformat()}"
        await store.grant_upgrade(account.account_id, upgrade, now, ref=ref, note=changed.plan_id)
