"""What the use cases need from storage. `meter.storage` implements it on Postgres.

A `Store` lives for one transaction on one account; `Storage.transaction` runs a unit of work
that commits only if it returns (and is retried as a whole on serialization failures). It is made
of parts named for what they hold (Accounts, Balances, Payments, ...); a use case that needs only
some of them says so in its types, so what it can touch is read in its signature.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol, TypeVar

from meter.domain.accounts import Account
from meter.domain.answers import Charged, Expiry, Extended, Released, Reserved
from meter.domain.balance import Balance
from meter.domain.balance_events import BalanceEvent, EventPosition, EventType
from meter.domain.budgets import Budget, BudgetKey, BudgetUnit, BudgetWindow
from meter.domain.caller_rates import Count
from meter.domain.checkout import CheckoutOrder, CheckoutSession, CreatedSession, RecentSessions
from meter.domain.credits import Adjustment, PaymentDecision, Purchase, RefusedPurchase, Settlement
from meter.domain.events import EventStatus, StoredEvent, WebhookEvent
from meter.domain.grants import Grant, GrantRequest
from meter.domain.holds import CallTokens, CallUsage, Hold, Pricing, ReserveParams
from meter.domain.ledger import EntryKind, RecordedEntry
from meter.domain.limits import PlanLimits, RateLimits, RateUsage
from meter.domain.payments import Payment, PaymentKey, SubscriptionPayment, TakenBack
from meter.domain.periods import Period
from meter.domain.pools import PoolName
from meter.domain.usage import UsageQuery, UsageRow
from meter.domain.webhook_deliveries import Delivery, DeliveryState, DeliveryStatus, Endpoint

T = TypeVar("T")


class Accounts(Protocol):
    """Accounts: their plan, allowance month and billing, and the balance warnings told in a month.
    What moves their money (debt, what a month was granted) is the SQL functions' alone."""

    async def account_state(self, account_id: str) -> tuple[Account | None, datetime]: ...
    async def lock_account(self, account_id: str) -> Account | None: ...
    async def open_account(self, account: Account, now: datetime) -> bool:
        """The account with its plan, its empty rows and its first month begun (meter_open_account);
        False when it exists already."""
        ...

    async def save_plan(self, account: Account, now: datetime) -> None:
        """Its plan and billing; never its money, month or grant (the caller holds its row lock)."""
        ...

    async def subscription_state(self, account_id: str) -> tuple[str | None, datetime | None]: ...
    async def save_subscription_state(
        self, account_id: str, status: str | None, grace_until: datetime | None
    ) -> None: ...

    async def grant_upgrade(self, account_id: str, tokens: int, now: datetime, *, ref: str, note: str) -> int:
        """The month's allowance grows by `tokens` (meter_grant_upgrade); the debt it paid."""
        ...

    async def roll_over(self, account_id: str) -> Account | None:
        """The account in the period containing now, moved there first if its period ended
        (meter_roll_over); None when there is no such account."""
        ...

    async def begin_month(self, account_id: str, now: datetime, *, expire_now: bool = False) -> int:
        """Begin the allowance month containing now on the locked account, granting it what its
        plan and payments give, once a month (meter_begin_month); with `expire_now` what is left
        of the allowance ends now, even in the same month. The debt its grant paid."""
        ...

    async def allowance_month(self, anchor: datetime | None, at: datetime) -> Period:
        """The allowance month containing `at`, counted from `anchor` (None: calendar months)."""
        ...

    async def convert_allowance(self, account_id: str, expires_at: datetime, now: datetime) -> int:
        """What is left of the month's allowance becomes a grant expiring at `expires_at`
        (meter_convert_allowance); the tokens converted."""
        ...

    async def months_beginning(self, anchor: datetime | None, period: Period) -> int:
        """How many allowance months counted from `anchor` begin within `period`."""
        ...

    async def account_by_subscription(self, subscription_ref: str) -> str | None: ...
    async def announce_warnings(self, account_id: str, period_start: datetime, levels: int) -> int | None: ...
    async def now(self) -> datetime: ...


class Balances(Protocol):
    """An account's tokens on its rows: read here, moved only by the SQL functions called here."""

    async def balance(self, account_id: str) -> Balance: ...
    async def adjust(
        self, account_id: str, pool: PoolName, delta: int, now: datetime, *, ref: str, note: str
    ) -> int | None:
        """An operator's Adjust of either sign (meter_adjust); None when done, else what the pool
        has available, short of a correction (nothing changed)."""
        ...

    async def credit(
        self,
        account_id: str,
        kind: EntryKind,
        pool: PoolName,
        amount: int,
        now: datetime,
        *,
        ref: str,
        note: str | None,
    ) -> int:
        """Credit a pool, paying the debt first (the account row locked already); the debt paid."""
        ...


class RateCounts(Protocol):
    """An account's rate limits and what it used of them."""

    async def rate_usage(self, account_id: str, now: datetime) -> RateUsage: ...
    async def rate_limits(self, account_id: str, plans: PlanLimits) -> RateLimits: ...


class CallerRateCounts(Protocol):
    """Each replica's requests per caller and second, shared so that every replica enforces one rate."""

    async def sync_caller_rates(self, replica: str, mine: Sequence[Count], since_second: int) -> list[Count]: ...
    async def forget_caller_rates(self, before_second: int) -> None: ...


class Holds(Protocol):
    """Reservations as ListReservations and the sweeper see them (the hot path changes them)."""

    async def open_holds(self, account_id: str, limit: int) -> tuple[list[tuple[Hold, datetime]], int]: ...
    async def expired_holds(self, limit: int) -> list[tuple[str, str]]: ...
    async def ended_periods(self, limit: int) -> list[str]: ...
    async def tell_expiring(self, notice_hours: int, limit: int) -> int: ...
    async def open_holds_summary(self) -> tuple[int, float]: ...


class Credits(Protocol):
    """Purchases and adjustments, each recorded once under its key; each pack payment decided once."""

    async def lock_payment_decision(self, payment_ref: str) -> PaymentDecision | None: ...
    async def decide_payment(self, decision: PaymentDecision, now: datetime, *, undecided: bool) -> bool: ...
    async def purchase(self, account_id: str, payment_ref: str) -> Purchase | None: ...
    async def insert_purchase(self, purchase: Purchase, now: datetime) -> bool: ...
    async def insert_refused_purchase(self, refused: RefusedPurchase, now: datetime) -> bool: ...
    async def adjustment(self, account_id: str, request_id: str) -> Adjustment | None: ...
    async def insert_adjustment(self, adjustment: Adjustment, now: datetime) -> bool: ...
    async def credit_pack_grant(self, purchase: Purchase, expires_at: datetime, now: datetime) -> int:
        """A pack that expires, credited as a grant of its own (meter_credit_pack_grant): its id."""
        ...


class Checkouts(Protocol):
    """Checkout Sessions meter created: what each sold, and how many an account has opened."""

    async def lock_checkouts(self, account_id: str) -> None: ...
    async def checkout_session(self, account_id: str, request_id: str) -> CheckoutSession | None: ...
    async def sold_session(self, session_id: str) -> CheckoutSession | None: ...
    async def recent_sessions(self, account_id: str, now: datetime) -> RecentSessions: ...
    async def insert_checkout_session(self, session: CheckoutSession) -> bool: ...
    async def record_created_session(self, account_id: str, request_id: str, session_id: str, url: str) -> None: ...
    async def forget_session(self, account_id: str, request_id: str) -> None: ...
    async def mark_session_paid(self, account_id: str, session_id: str, now: datetime) -> None: ...


class RefusedPurchases(Protocol):
    """Payments Stripe took that meter would not credit, as support lists and settles them."""

    async def refused_purchases(
        self, account_id: str, before: int, limit: int, *, unsettled_only: bool = False
    ) -> Sequence[RefusedPurchase]: ...
    async def lock_refused_purchase(self, account_id: str, payment_ref: str) -> RefusedPurchase | None: ...
    async def refused_purchase_by_intent(self, payment_intent: str) -> RefusedPurchase | None: ...
    async def settle_refused_purchase(self, account_id: str, payment_ref: str, settlement: Settlement) -> None: ...


class StripeProvider(Protocol):
    """Stripe's API, through stripe-python: where Checkout Sessions are created and payments refunded."""

    async def create_session(self, order: CheckoutOrder, expires_at: datetime) -> CreatedSession: ...
    async def refund_refused(self, account_id: str, payment_ref: str, payment_intent: str) -> str: ...
    async def close(self) -> None: ...


class Payments(Protocol):
    """What each Stripe payment bought, and what refunds and disputes did to it."""

    async def payment_by_intent(self, payment_intent: str) -> PaymentKey | None: ...
    async def payment_by_invoice(self, invoice_ref: str) -> PaymentKey | None: ...
    async def lock_payment(self, key: PaymentKey) -> Payment | None: ...
    async def save_payment(self, payment: Payment) -> None: ...
    async def insert_subscription_payment(self, paid: SubscriptionPayment, now: datetime) -> bool: ...
    async def link_payment_intent(self, account_id: str, invoice_ref: str, payment_intent: str) -> str | None: ...
    async def take_back(
        self, account_id: str, key: PaymentKey, tokens: int, kind: EntryKind, ref: str, now: datetime
    ) -> TakenBack:
        """Take a reversed payment's tokens back (meter_take_back), the account row locked."""
        ...

    async def give_back(self, account_id: str, key: PaymentKey, tokens: int, ref: str, now: datetime) -> int:
        """Give a won dispute's tokens back (meter_give_back); what the balance got back."""
        ...


class WaitingRequests(Protocol):
    """Stripe events that arrived before what they refer to, kept until it exists."""

    async def lock_key(self, key: str) -> None: ...
    async def insert_waiting(
        self, key: str, event_id: str, kind: str, request: Mapping[str, Any], now: datetime
    ) -> bool: ...
    async def take_waiting(self, key: str) -> list[tuple[str, str, dict[str, Any]]]: ...


class WebhookEvents(Protocol):
    """Stripe events: each applied once, and what became of it."""

    async def claim_event(self, account_id: str, event: WebhookEvent, now: datetime) -> bool: ...
    async def record_event(
        self, account_id: str, event: WebhookEvent, status: EventStatus, reason: str | None, now: datetime
    ) -> EventStatus: ...
    async def stored_event(self, event_id: str) -> StoredEvent | None: ...
    async def adopt_event(
        self, account_id: str, event_id: str, status: EventStatus, reason: str | None, now: datetime
    ) -> None: ...

    async def prune_payloads(self, cutoff: datetime, now: datetime, limit: int) -> Payloads:
        """Delete the payloads of at most `limit` events unchanged since before `cutoff`, skipping
        rows another transaction holds; each pruned row records `now` and the bytes it held."""
        ...

    async def payload_retention(self, cutoff: datetime | None, passes: int) -> PayloadRetention:
        """The payloads kept, due (unchanged since before `cutoff`; None: none is ever due) and
        pruned, with the `passes` latest pruning passes."""
        ...


@dataclass(frozen=True)
class Payloads:
    """A number of stored webhook payloads and the bytes they hold (or held, once pruned)."""

    count: int = 0
    size: int = 0

    def __add__(self, other: Payloads) -> Payloads:
        return Payloads(self.count + other.count, self.size + other.size)


@dataclass(frozen=True)
class PayloadRetention:
    """What the retention of webhook payloads kept, has due and pruned (`meter retention`)."""

    kept: Payloads
    due: Payloads
    pruned: Payloads
    passes: list[tuple[datetime, Payloads]]  # the latest pruning passes, newest first


class BalanceEvents(Protocol):
    """The facts the product is told about, each written with the change it describes."""

    async def emit(self, account_id: str, type: EventType, data: Mapping[str, Any], now: datetime) -> int: ...
    async def debt_events(self, account_id: str, ref: str, now: datetime) -> None: ...
    async def events_after(self, account_id: str, after_sequence: int, limit: int) -> list[BalanceEvent]: ...
    async def events_after_position(self, after: EventPosition | None, limit: int) -> list[BalanceEvent]: ...


class WebhookDeliveries(Protocol):
    """Webhook endpoints, and the delivery of each event an endpoint wants."""

    async def insert_endpoint(self, endpoint: Endpoint, secret: str) -> bool: ...
    async def endpoints(self) -> list[Endpoint]: ...
    async def pause_endpoint(self, endpoint_id: str, paused: bool) -> bool: ...
    async def remove_endpoint(self, endpoint_id: str) -> int | None: ...
    async def back_off_endpoint(
        self, endpoint_id: str, now: datetime, first_seconds: float, most_seconds: float
    ) -> None: ...
    async def endpoint_answered(self, endpoint_id: str) -> None: ...
    async def disable_endpoint(self, endpoint_id: str, now: datetime, reason: str) -> None: ...
    async def claim_deliveries(
        self, now: datetime, lease_seconds: float, limit: int, per_endpoint: int, sending: Mapping[str, int]
    ) -> list[Delivery]: ...
    async def finish_delivery(
        self, delivery: Delivery, now: datetime, *, error: str | None, retry_at: datetime | None
    ) -> bool: ...
    async def due_stranded(self, now: datetime) -> int: ...
    async def redeliver(self, endpoint_id: str, account_id: str, first: int, last: int, now: datetime) -> int: ...
    async def redeliver_dead(self, endpoint_id: str, now: datetime) -> int: ...
    async def event_position(self, event_id: str) -> tuple[str, int] | None: ...
    async def delivery_states(
        self, endpoint_id: str | None, status: DeliveryStatus | None, account_id: str | None, limit: int
    ) -> list[DeliveryState]: ...
    async def now(self) -> datetime: ...


class History(Protocol):
    """What happened to an account: its ledger a page at a time, and its usage totals."""

    async def ledger_page(
        self,
        account_id: str,
        *,
        before_entry: int | None,
        limit: int,
        kind: str | None,
        start: datetime | None,
        end: datetime | None,
    ) -> list[RecordedEntry]: ...
    async def secret(self, name: str) -> bytes: ...
    async def usage_totals(self, account_id: str, query: UsageQuery) -> list[UsageRow]: ...
    async def fold_usage(self, accounts: int) -> date | None: ...


class Budgets(Protocol):
    """Caps on what one label value's calls may use each period (counted by the hot path)."""

    async def set_budget(
        self, account_id: str, key: BudgetKey, unit: BudgetUnit, cap: int, window: BudgetWindow | None
    ) -> str: ...
    async def delete_budget(self, account_id: str, key: BudgetKey) -> bool: ...
    async def budgets(
        self, account_id: str, key: BudgetKey | None = None, budget_ids: Sequence[int] | None = None
    ) -> list[Budget]: ...
    async def announce_budget(self, account_id: str, budget: Budget, levels: int) -> int | None:
        """Add `levels` (bits) to those the budget's period told (meter_announce_budget); the bits
        told before, or None when there is nothing new (another request told them)."""
        ...


class Grants(Protocol):
    """An account's own grants (the SQL functions grant, end and revoke them)."""

    async def grant(self, request: GrantRequest) -> tuple[str, str | None, Grant | None]: ...
    async def granted(self, account_id: str, grant_id: int) -> Grant | None: ...
    async def revoke_grant(self, account_id: str, grant_id: int) -> tuple[str, int]: ...
    async def live_grants(self, account_id: str) -> list[Grant]:
        """Its pools and grants with tokens left or held, in the order Reserve draws them."""
        ...

    async def grants_due(self, limit: int) -> list[str]: ...


class Store(
    Accounts,
    Balances,
    RateCounts,
    CallerRateCounts,
    Holds,
    Credits,
    Checkouts,
    RefusedPurchases,
    Payments,
    WaitingRequests,
    WebhookEvents,
    BalanceEvents,
    WebhookDeliveries,
    History,
    Budgets,
    Grants,
    Protocol,
):
    """Everything a transaction may touch; each use case names the parts it needs."""


ALL_ACCOUNTS = ""  # an EventNotices subscription to every account's notices


class EventNotices(Protocol):
    """Hints that an account has new balance events (never the events themselves)."""

    def subscription(self, account_id: str) -> AbstractAsyncContextManager[asyncio.Event]: ...
    async def listen(self) -> None: ...
    async def close(self) -> None: ...


class Storage(Protocol):
    async def transaction(self, work: Callable[[Store], Awaitable[T]]) -> T:
        """Run `work` in one transaction; commit if it returns, roll back if it raises."""
        ...

    @property
    def hot_path(self) -> HotPath:
        """The calls every model call waits on, each one statement decided in the database."""
        ...

    @property
    def notices(self) -> EventNotices:
        """When an account's balance events may have grown, for watchers."""
        ...


class HotPath(Protocol):
    async def reserve(
        self, account_id: str, request_id: str, params: ReserveParams, pricing: Pricing, start: int
    ) -> Reserved: ...
    async def commit(self, reservation_id: str, tokens: CallTokens) -> Charged: ...
    async def release(self, reservation_id: str) -> Released: ...
    async def extend(self, reservation_id: str, ttl_seconds: int) -> Extended: ...
    async def expire(self, account_id: str, hold_id: str, *, charge: bool) -> Expiry: ...
    async def charge_usage(self, account_id: str, request_id: str, usage: CallUsage, pricing: Pricing) -> Charged: ...
    async def warm_up(self, connections: int) -> None: ...


class Conflict(Exception):
    """Raised inside a unit of work when a concurrent transaction won a race (a duplicate insert):
    the storage rolls back and runs the work again, which then finds the winner's result."""
