"""Domain values <-> protobuf messages."""

from __future__ import annotations

from datetime import UTC, date, datetime

from google.protobuf import struct_pb2, timestamp_pb2
from google.type import date_pb2

from meter.catalog import Catalog
from meter.domain.amounts import format_millionths
from meter.domain.balance import Balance, WarningLevel
from meter.domain.balance_events import BalanceEvent
from meter.domain.budgets import Budget, BudgetUnit, BudgetWindow
from meter.domain.checkout import CheckoutSession, CheckoutStatus
from meter.domain.credits import RefusalState, RefusedPurchase
from meter.domain.errors import InvalidField
from meter.domain.events import EventStatus, StoredEvent, WebhookEvent
from meter.domain.grants import Grant, GrantSource
from meter.domain.holds import CallTokens, ExpiredHolds, HoldStatus
from meter.domain.invoices import InvoiceLine
from meter.domain.ledger import EntryKind, RecordedEntry
from meter.domain.limits import RateLimits
from meter.domain.periods import Period
from meter.domain.plans import CancelledAllowance
from meter.domain.pools import PoolName
from meter.domain.usage import UsageGrouping, UsageRecord, UsageReport, UsageTotals
from meter.service.balance import AccountBalance
from meter.service.plans import ExpiredHoldsChoice
from meter.service.reservations import OpenReservations
from meter.service.reversals import ReversalKind
from meter.v1 import meter_pb2 as pb

_WARNING = {
    WarningLevel.NONE: pb.WARNING_LEVEL_NONE,
    WarningLevel.PERCENT_80: pb.WARNING_LEVEL_PERCENT_80,
    WarningLevel.PERCENT_90: pb.WARNING_LEVEL_PERCENT_90,
    WarningLevel.PERCENT_95: pb.WARNING_LEVEL_PERCENT_95,
    WarningLevel.EXHAUSTED: pb.WARNING_LEVEL_EXHAUSTED,
}
_STATUS = {
    HoldStatus.OPEN: pb.RESERVATION_STATUS_OPEN,
    HoldStatus.COMMITTED: pb.RESERVATION_STATUS_COMMITTED,
    HoldStatus.RELEASED: pb.RESERVATION_STATUS_RELEASED,
    HoldStatus.EXPIRED: pb.RESERVATION_STATUS_EXPIRED,
}
_POOLS = {pb.POOL_ALLOWANCE: PoolName.ALLOWANCE, pb.POOL_PURCHASED: PoolName.PURCHASED}
_EVENT_STATUS = {
    EventStatus.APPLIED: pb.EVENT_STATUS_APPLIED,
    EventStatus.IGNORED: pb.EVENT_STATUS_IGNORED,
    EventStatus.REJECTED: pb.EVENT_STATUS_REJECTED,
    EventStatus.DUPLICATE: pb.EVENT_STATUS_DUPLICATE,
    EventStatus.PENDING: pb.EVENT_STATUS_PENDING,
}
_REVERSALS = {
    pb.REVERSAL_KIND_REFUND: ReversalKind.REFUND,
    pb.REVERSAL_KIND_DISPUTE: ReversalKind.DISPUTE,
    pb.REVERSAL_KIND_DISPUTE_WON: ReversalKind.DISPUTE_WON,
    pb.REVERSAL_KIND_DISPUTE_LOST: ReversalKind.DISPUTE_LOST,
}

# Timestamps outside this range are absurd for billing and would overflow Postgres or Python.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def optional_datetime(message: object, field: str) -> datetime | None:
    """A Timestamp field, or None when unset; refuses absurd times."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    stamp = getattr(message, field)
    if not 0 <= stamp.nanos < 1_000_000_000 or not _EARLIEST.timestamp() <= stamp.seconds < _LATEST.timestamp():
        raise InvalidField(field, "must be a time between 1970 and 9999")
    return stamp.ToDatetime(tzinfo=UTC)


def optional_period(message: object) -> Period | None:
    start, end = optional_datetime(message, "period_start"), optional_datetime(message, "period_end")
    if start is None and end is None:
        return None
    if start is None or end is None:
        raise InvalidField(
            "period_start" if start is None else "period_end", "set both period_start and period_end, or neither"
        )
    if start >= end:
        raise InvalidField("period_end", "must be after period_start")
    return Period(start, end)


def invoice_lines(request: pb.GrantPeriodAllowanceRequest) -> tuple[InvoiceLine, ...]:
    """The invoice's lines; without any, period_start and period_end are its billing period."""
    if not request.lines:
        period = optional_period(request)
        if period is None:
            raise InvalidField("period_start", "the paid period is required (or the invoice's lines)")
        return (InvoiceLine(period, proration=False, stripe_price="", amount_minor=0),)
    return tuple(
        InvoiceLine(_line_period(line, index), line.proration, line.stripe_price, line.amount_minor)
        for index, line in enumerate(request.lines)
    )


def _line_period(line: pb.InvoiceLine, index: int) -> Period | None:
    try:
        return optional_period(line)
    except InvalidField as refused:
        raise InvalidField(f"lines[{index}].{refused.metadata['field']}", refused.metadata["problem"]) from None


def pool(value: int) -> PoolName:
    try:
        return _POOLS[value]
    except KeyError:
        raise InvalidField("pool", "must be POOL_ALLOWANCE or POOL_PURCHASED") from None


def reversal_kind(value: int) -> ReversalKind:
    try:
        return _REVERSALS[value]
    except KeyError:
        raise InvalidField("kind", "must be REVERSAL_KIND_REFUND, _DISPUTE, _DISPUTE_WON or _DISPUTE_LOST") from None


def event_status(value: EventStatus | None) -> int:
    return pb.EVENT_STATUS_UNSPECIFIED if value is None else _EVENT_STATUS[value]


def stored_status(value: int) -> EventStatus:
    for status, number in _EVENT_STATUS.items():
        if number == value and status in (EventStatus.IGNORED, EventStatus.REJECTED):
            return status
    raise InvalidField("status", "must be EVENT_STATUS_IGNORED or EVENT_STATUS_REJECTED")


def source_event(message: object, field: str = "source_event") -> WebhookEvent | None:
    """The webhook event a request carries, or None."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    event = getattr(message, field)
    received = optional_datetime(event, "received_time")
    return WebhookEvent(event.event_id, event.type, bytes(event.payload), received or datetime.now(UTC))


def webhook_event(value: WebhookEvent) -> pb.WebhookEvent:
    return pb.WebhookEvent(
        event_id=value.event_id, type=value.type, payload=value.payload, received_time=timestamp(value.received_at)
    )


def stored_event(value: StoredEvent) -> pb.GetWebhookEventResponse:
    return pb.GetWebhookEventResponse(
        event=webhook_event(value.event),
        account_id=value.account_id,
        status=_EVENT_STATUS[value.status],
        reason=value.reason or "",
    )


def hold_status(value: HoldStatus) -> int:
    return _STATUS[value]


def balance(value: Balance) -> pb.Balance:
    return pb.Balance(
        account_id=value.account_id,
        allowance_remaining=value.allowance_remaining,
        purchased_remaining=value.purchased_remaining,
        held=value.held,
        available=value.available,
        debt=value.debt,
        plan_id=value.plan_id,
        period_start=timestamp(value.period.start),
        period_end=timestamp(value.period.end),
        allowance_total=value.allowance_total,
        used_this_period=value.used_this_period,
        warning_level=_WARNING[value.warning_level],
        paid_through=timestamp(value.paid_through) if value.paid_through else None,
        granted_remaining=value.granted_remaining,
    )


_GRANT_SOURCES = {
    GrantSource.ALLOWANCE: pb.GRANT_SOURCE_ALLOWANCE,
    GrantSource.PURCHASE: pb.GRANT_SOURCE_PURCHASE,
    GrantSource.PROMOTION: pb.GRANT_SOURCE_PROMOTION,
    GrantSource.ROLLOVER: pb.GRANT_SOURCE_ROLLOVER,
    GrantSource.ADJUSTMENT: pb.GRANT_SOURCE_ADJUSTMENT,
}
_GRANT_SOURCE_NAMES = {value: source for source, value in _GRANT_SOURCES.items()}


def grant_source(value: int) -> GrantSource:
    """Unspecified: a promotion; a source Grant may not give is refused by GrantRequest.checked."""
    if value == pb.GRANT_SOURCE_UNSPECIFIED:
        return GrantSource.PROMOTION
    if value not in _GRANT_SOURCE_NAMES:
        raise InvalidField("source", "is not a GrantSource")
    return _GRANT_SOURCE_NAMES[value]


def grant(value: Grant) -> pb.Grant:
    return pb.Grant(
        grant_id=value.grant_id,
        source=_GRANT_SOURCES[value.source],
        remaining=value.remaining,
        held=value.held,
        priority=value.priority,
        expires_at=timestamp(value.expires_at) if value.expires_at else None,
        tokens=value.tokens,
        reason=value.reason,
        request_id=value.request_id,
        created_at=timestamp(value.created_at) if value.created_at else None,
    )


def optional_balance(value: Balance | None) -> pb.Balance | None:
    """None (the field left unset) while a request waits for what it refers to."""
    return None if value is None else balance(value)


def rate_limits(value: RateLimits) -> pb.RateLimits:
    return pb.RateLimits(
        requests_per_minute=value.requests_per_minute or 0,
        tokens_per_minute=value.tokens_per_minute or 0,
        concurrent_holds=value.concurrent_holds or 0,
    )


def optional_limits(request: pb.SetPlanRequest) -> RateLimits | None:
    """The request's limits as given (0 kept as 0: no limit), or None when left out."""
    if not request.HasField("limits"):
        return None
    limits = request.limits
    return RateLimits(limits.requests_per_minute, limits.tokens_per_minute, limits.concurrent_holds)


def account_balance(value: AccountBalance) -> pb.GetBalanceResponse:
    response = pb.GetBalanceResponse(balance=balance(value.balance), limits=rate_limits(value.limits))
    room = value.headroom
    if room is not None:
        response.headroom.minute_ends.CopyFrom(timestamp(room.minute_ends))
        if room.requests_this_minute is not None:
            response.headroom.requests_this_minute = room.requests_this_minute
        if room.tokens_this_minute is not None:
            response.headroom.tokens_this_minute = room.tokens_this_minute
        if room.holds is not None:
            response.headroom.holds = room.holds
    response.grants.extend(grant(g) for g in value.grants)
    if value.next_expiry is not None:
        response.next_expiry.CopyFrom(grant(value.next_expiry))
    return response


def catalog(value: Catalog) -> pb.GetCatalogResponse:
    return pb.GetCatalogResponse(
        version=value.version,
        models=[
            pb.Model(
                id=m.id,
                provider=m.provider,
                input_price_micros_per_million=m.input_price,
                output_price_micros_per_million=m.output_price,
                input_weight=format_millionths(m.input_weight),
                output_weight=format_millionths(m.output_weight),
                cached_input_price_micros_per_million=m.cached_input_price,
                cache_write_price_micros_per_million=m.cache_write_price,
                reasoning_price_micros_per_million=m.reasoning_price,
                cached_input_weight=format_millionths(m.cached_input_weight),
                cache_write_weight=format_millionths(m.cache_write_weight),
                reasoning_weight=format_millionths(m.reasoning_weight),
            )
            for m in value.models.values()
        ],
        packs=[
            pb.Pack(
                id=p.id,
                tokens=p.tokens,
                price_minor=p.price_minor,
                currency=p.currency,
                active=p.active,
                name=p.name,
                expires_after_days=p.expires_after_days or 0,
            )  # fmt: skip
            for p in value.packs.values()
        ],
        plans=[
            pb.Plan(
                id=p.id,
                monthly_allowance_tokens=p.monthly_allowance_tokens,
                per_account=p.per_account,
                limits=rate_limits(p.limits),
                stripe_prices=p.stripe_prices,
                cancelled_allowance=_CANCELLED_ALLOWANCE[p.cancelled_allowance],
                past_due_grace_days=p.past_due_grace_days or 0,
            )
            for p in value.plans.values()
        ],
        usage_label_keys=value.usage_label_keys,
        default_plan=value.default_plan,
    )


_CANCELLED_ALLOWANCE = {
    CancelledAllowance.ENDS_NOW: pb.CANCELLED_ALLOWANCE_ENDS_NOW,
    CancelledAllowance.ENDS_WITH_PERIOD: pb.CANCELLED_ALLOWANCE_ENDS_WITH_PERIOD,
    CancelledAllowance.CONVERTS: pb.CANCELLED_ALLOWANCE_CONVERTS,
}
_CHECKOUT_STATUS = {
    CheckoutStatus.OPEN: pb.CHECKOUT_STATUS_OPEN,
    CheckoutStatus.PAID: pb.CHECKOUT_STATUS_PAID,
    CheckoutStatus.EXPIRED: pb.CHECKOUT_STATUS_EXPIRED,
}


def checkout_session(value: CheckoutSession, now: datetime) -> pb.CheckoutSession:
    return pb.CheckoutSession(
        session_id=value.session_id,
        url=value.url,
        account_id=value.account_id,
        pack_id=value.sold.pack_id,
        tokens=value.sold.tokens,
        price_minor=value.sold.price_minor,
        currency=value.sold.currency,
        catalog_version=value.sold.catalog_version,
        expires_time=timestamp(value.expires_at),
        created_time=timestamp(value.created_at),
        request_id=value.request_id,
        status=_CHECKOUT_STATUS[value.status(now)],
    )


def refused_purchase(value: RefusedPurchase) -> pb.RefusedPurchase:
    purchase = value.purchase
    return pb.RefusedPurchase(
        account_id=purchase.account_id,
        payment_ref=purchase.payment_ref,
        pack_id=purchase.pack_id,
        tokens=purchase.tokens,
        amount_minor=purchase.amount_minor,
        currency=purchase.currency,
        payment_intent=purchase.payment_intent or "",
        reason=value.reason,
        message=value.message,
        refused_time=timestamp(value.refused_at) if value.refused_at else None,
        event_id=purchase.event_id or "",
        state=_REFUSAL_STATES[value.settlement.state],
        refunded_minor=value.settlement.refunded_minor,
        refund_ref=value.settlement.refund_ref or "",
        note=value.settlement.note or "",
        settled_time=timestamp(value.settlement.settled_at) if value.settlement.settled_at else None,
        settled_by=value.settlement.settled_by or "",
    )


_REFUSAL_STATES = {
    RefusalState.OPEN: pb.REFUSED_PURCHASE_STATE_OPEN,
    RefusalState.REFUND_REQUESTED: pb.REFUSED_PURCHASE_STATE_REFUND_REQUESTED,
    RefusalState.REFUNDED: pb.REFUSED_PURCHASE_STATE_REFUNDED,
    RefusalState.RESOLVED: pb.REFUSED_PURCHASE_STATE_RESOLVED,
}


_ENTRY_KINDS = {
    pb.ENTRY_KIND_SUBSCRIPTION_GRANT: EntryKind.SUBSCRIPTION_GRANT,
    pb.ENTRY_KIND_EXPIRY: EntryKind.EXPIRY,
    pb.ENTRY_KIND_USAGE: EntryKind.USAGE,
    pb.ENTRY_KIND_PURCHASE: EntryKind.PURCHASE,
    pb.ENTRY_KIND_ADJUSTMENT: EntryKind.ADJUSTMENT,
    pb.ENTRY_KIND_DEBT_PAYMENT: EntryKind.DEBT_PAYMENT,
    pb.ENTRY_KIND_REFUND: EntryKind.REFUND,
    pb.ENTRY_KIND_DISPUTE_FREEZE: EntryKind.DISPUTE_FREEZE,
    pb.ENTRY_KIND_DISPUTE_RELEASE: EntryKind.DISPUTE_RELEASE,
    pb.ENTRY_KIND_GRANT: EntryKind.GRANT,
    pb.ENTRY_KIND_REVOCATION: EntryKind.REVOCATION,
}
_ENTRY_KIND_VALUES = {kind: value for value, kind in _ENTRY_KINDS.items()}
_POOL_VALUES = {
    PoolName.ALLOWANCE: pb.POOL_ALLOWANCE,
    PoolName.PURCHASED: pb.POOL_PURCHASED,
    PoolName.DEBT: pb.POOL_DEBT,
    PoolName.GRANT: pb.POOL_GRANT,
}


def entry_kind_filter(value: int) -> EntryKind | None:
    """ENTRY_KIND_UNSPECIFIED: no filter."""
    if value == pb.ENTRY_KIND_UNSPECIFIED:
        return None
    try:
        return _ENTRY_KINDS[value]
    except KeyError:
        raise InvalidField("kind", "is not an EntryKind") from None


def ledger_entry(value: RecordedEntry) -> pb.LedgerEntry:
    return pb.LedgerEntry(
        entry_id=value.entry_id,
        created_at=timestamp(value.created_at),
        kind=_ENTRY_KIND_VALUES[value.kind],
        pool=_POOL_VALUES[value.pool],
        amount=value.amount,
        reservation_id=value.reservation_id,
        ref=value.ref,
        note=value.note,
        caller=value.caller,
        usage=usage_record(value.usage) if value.usage else None,
        grant_id=value.grant_id,
    )


def usage_record(value: UsageRecord) -> pb.UsageRecord:
    return pb.UsageRecord(
        model=value.model,
        catalog_version=value.catalog_version,
        input_tokens=value.usage.tokens.input_tokens,
        output_tokens=value.usage.tokens.output_tokens,
        cached_input_tokens=value.usage.tokens.cached_input_tokens,
        cache_write_tokens=value.usage.tokens.cache_write_tokens,
        reasoning_tokens=value.usage.tokens.reasoning_tokens,
        charged_tokens=value.usage.charged_tokens,
        cost_micros=value.usage.cost_micros,
        unbilled_tokens=value.usage.unbilled_tokens,
        late=value.usage.late,
        labels=value.labels,
    )


def call_tokens(request: pb.CommitRequest | pb.ChargeUsageRequest) -> CallTokens:
    return CallTokens(
        input_tokens=request.input_tokens,
        output_tokens=request.output_tokens,
        cached_input_tokens=request.cached_input_tokens,
        cache_write_tokens=request.cache_write_tokens,
        reasoning_tokens=request.reasoning_tokens,
    )


_GROUPINGS = {
    pb.USAGE_GROUPING_DAY: UsageGrouping.DAY,
    pb.USAGE_GROUPING_MODEL: UsageGrouping.MODEL,
    pb.USAGE_GROUPING_PROVIDER: UsageGrouping.PROVIDER,
    pb.USAGE_GROUPING_LABELS: UsageGrouping.LABELS,
}


def usage_grouping(value: int) -> UsageGrouping:
    try:
        return _GROUPINGS[value]
    except KeyError:
        raise InvalidField(
            "group_by",
            "must be USAGE_GROUPING_DAY, USAGE_GROUPING_MODEL, USAGE_GROUPING_PROVIDER or USAGE_GROUPING_LABELS",
        ) from None


def optional_date(message: object, field: str) -> date | None:
    """A google.type.Date field, or None when unset; a partial or impossible date is refused."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    value = getattr(message, field)
    try:
        return date(value.year, value.month, value.day)
    except ValueError:
        raise InvalidField(field, "must be a whole calendar date (year, month and day)") from None


def usage_report(value: UsageReport) -> pb.GetUsageResponse:
    return pb.GetUsageResponse(
        rows=[
            pb.UsageRow(
                day=date_pb2.Date(year=row.day.year, month=row.day.month, day=row.day.day) if row.day else None,
                model=row.model,
                provider=row.provider,
                labels=row.labels,
                totals=usage_totals(row.totals),
            )
            for row in value.rows
        ],
        total=usage_totals(value.total),
    )


def usage_totals(value: UsageTotals) -> pb.UsageTotals:
    return pb.UsageTotals(
        requests=value.requests,
        input_tokens=value.input_tokens,
        output_tokens=value.output_tokens,
        charged_tokens=value.charged_tokens,
        cost_micros=value.cost_micros,
        unbilled_tokens=value.unbilled_tokens,
        cached_input_tokens=value.cached_input_tokens,
        cache_write_tokens=value.cache_write_tokens,
        reasoning_tokens=value.reasoning_tokens,
    )


def open_reservations(value: OpenReservations) -> pb.ListOpenReservationsResponse:
    return pb.ListOpenReservationsResponse(
        reservations=[
            pb.Reservation(
                reservation_id=r.hold.reservation_id,
                request_id=r.hold.request_id,
                model=r.hold.params.model,
                input_tokens=r.hold.params.input_tokens,
                max_output_tokens=r.hold.params.max_output_tokens,
                held_tokens=r.hold.held_tokens,
                created_at=timestamp(r.created_at),
                expires_at=timestamp(r.hold.expires_at),
                catalog_version=r.hold.pricing.catalog_version,
                labels=r.hold.params.labels,
            )
            for r in value.reservations
        ],
        open_count=value.open_count,
    )


def balance_event(value: BalanceEvent) -> pb.BalanceEvent:
    data = struct_pb2.Struct()
    data.update(value.data)
    return pb.BalanceEvent(
        event_id=value.event_id,
        account_id=value.account_id,
        sequence=value.sequence,
        type=value.type,
        occurred_at=timestamp(value.occurred_at),
        data=data,
        balance=balance(value.balance),
        position=str(value.position),
    )


_EXPIRED_HOLDS: dict[int, ExpiredHoldsChoice] = {
    pb.EXPIRED_HOLDS_UNSPECIFIED: "keep",
    pb.EXPIRED_HOLDS_PLAN: "plan",
    pb.EXPIRED_HOLDS_RELEASE: ExpiredHolds.RELEASE,
    pb.EXPIRED_HOLDS_CHARGE: ExpiredHolds.CHARGE,
}


def expired_holds(value: int) -> ExpiredHoldsChoice:
    if value not in _EXPIRED_HOLDS:
        raise InvalidField("expired_holds", "must be one of the ExpiredHolds values")
    return _EXPIRED_HOLDS[value]


_BUDGET_UNITS = {pb.BUDGET_UNIT_TOKENS: BudgetUnit.TOKENS, pb.BUDGET_UNIT_COST_MICROS: BudgetUnit.COST_MICROS}
_BUDGET_UNIT_VALUES = {unit: value for value, unit in _BUDGET_UNITS.items()}


def budget_unit(value: int) -> BudgetUnit | None:
    return _BUDGET_UNITS.get(value)


_BUDGET_WINDOWS = {
    pb.BUDGET_WINDOW_ACCOUNT_MONTH: BudgetWindow.ACCOUNT_MONTH,
    pb.BUDGET_WINDOW_DAY: BudgetWindow.DAY,
    pb.BUDGET_WINDOW_WEEK: BudgetWindow.WEEK,
    pb.BUDGET_WINDOW_CALENDAR_MONTH: BudgetWindow.CALENDAR_MONTH,
}
_BUDGET_WINDOW_VALUES = {window: value for value, window in _BUDGET_WINDOWS.items()}


def budget_window(value: int) -> BudgetWindow | None:
    """None for unspecified (the budget's own window); a value this version does not know is refused."""
    if value == pb.BUDGET_WINDOW_UNSPECIFIED:
        return None
    if value not in _BUDGET_WINDOWS:
        raise InvalidField("window", "must be BUDGET_WINDOW_ACCOUNT_MONTH, _DAY, _WEEK or _CALENDAR_MONTH")
    return _BUDGET_WINDOWS[value]


def budget(value: Budget) -> pb.Budget:
    return pb.Budget(
        label_key=value.key.label_key,
        label_value=value.key.label_value,
        unit=_BUDGET_UNIT_VALUES[value.unit],
        cap=value.cap,
        used=value.used,
        held=value.held,
        remaining=value.remaining,
        period_start=timestamp(value.period_start),
        period_end=timestamp(value.period_end),
        window=_BUDGET_WINDOW_VALUES[value.window],
    )
