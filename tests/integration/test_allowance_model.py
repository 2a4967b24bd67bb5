"""Allowance months against a reference model: three accounts, through the real server's gRPC API.

Hypothesis drives a yearly subscriber (Pro at its yearly price: one invoice pays for twelve
months), a monthly subscriber and an account without a subscription (calendar months) through
time passing (minutes, days, whole months, many months at once, to just before or just after a
month's end, past what the invoices paid for), spending, Adjust of either sign on either pool,
plan changes, renewals and refunds of the subscribers' invoices, and after each step holds every
balance to the model's. The model states the rules, not the service's steps:

- an account's allowance month is counted from its billing anchor, the same day and time each
  month (on the month's last day where it has no such day), or is the calendar month (UTC)
  without a subscription;
- a month is granted the plan's allowance when it begins before paid_through (the end of the
  latest billing period an invoice paid for), or always without a subscription; less its share
  of what refunds withheld from the invoice paying for it (see below). A grant pays debt first;
- at a month's end the allowance left expires (it counts as its invoice's unused tokens) and the
  month containing now begins: an account idle over several months expires once and is granted
  once;
- an invoice paying for the month containing now, not granted yet, grants it: nothing expires
  (what Adjust put in the pool stays to the month's end) and its count of used tokens goes on;
- an invoice bought its months' allowance: months x per month, per month being the allowance of
  the plan its price is sold at, or the account's plan's if less;
- another plan applies from the next month; and when the month was granted, if the new plan's
  allowance less the month's withheld share is more than the month was granted, the difference is
  granted at once (an upgrade; a downgrade and upgrade back within a month grant nothing);
- a refund (cumulative amount) takes back the invoice's tokens x refunded / amount (all of them
  when refunded in full), less what earlier refunds took, in this order: from its months not
  begun yet (withheld from their grants, each at most its per-month share, the last months
  first), from the current month's allowance pool while the invoice pays for the current month,
  from what its ended months left unused (it expired: taken from nothing; a month that ended
  before its invoice came was never granted, and its whole share counts); the rest is debt;
- a Reserve is refused in debt or for too few tokens; a Commit is charged from the allowance
  first, then purchased, then debt; Adjust credits a pool (paying debt first) or takes from it
  only what it has (refused otherwise).

The disagreements the machine found are replayed at the end of this file, as regression tests.

Time is the database's clock moved by the server's test clock, re-read at each move so that the
server's now is the model's plus the time the step has taken. No move stops within a minute before a
month's end (one that would is carried to the boundary itself), so a step's calls, which take far
less than that minute, fall on the side of every boundary the model says. The machine runs in a
thread with its own event loop, as the other model tests' do.
"""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from server_machine import ServerMachine

from meter.storage.engine import dsn
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, error_info, new_id

T = TypeVar("T")

MARGIN = timedelta(minutes=1)  # no step stops closer than this before a month's end

# The suite catalog's plans (tests/support.py: suite_catalog) and what the model needs of them.
ALLOWANCE = {"free": 0, "starter": 50_000, "pro": 500_000, "business": 5_000_000}
SUBSCRIBED_PLANS = ("starter", "pro", "business")  # the plans sold at a monthly Stripe price
CALENDAR_PLANS = ("free", "starter", "pro", "business", "enterprise")
ROLES = ("calendar", "yearly", "monthly")
SUBSCRIBERS = ("yearly", "monthly")
ENTERPRISE_ALLOWANCES = (0, 20_000, 800_000)
YEARLY_PRICE = "price_pro_yearly"
SOLD = {"price_starter_monthly": 50_000, "price_pro_monthly": 500_000, "price_business_monthly": 5_000_000,
        YEARLY_PRICE: 500_000}  # fmt: skip
PAID = {"price_starter_monthly": 900, "price_pro_monthly": 10_000, "price_business_monthly": 90_000,
        YEARLY_PRICE: 120_000}  # fmt: skip


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time `months` later, on the month's last day where it has no such day."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def months_from(anchor: datetime | None, moment: datetime, length: int = 1) -> tuple[datetime, datetime]:
    """The `length`-month period counted from `anchor` that contains `moment` (calendar months
    when there is no anchor)."""
    if anchor is None:
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return start, add_months(start, 1)
    k = ((moment.year - anchor.year) * 12 + moment.month - anchor.month) // length
    while k > 0 and add_months(anchor, k * length) > moment:
        k -= 1
    while add_months(anchor, (k + 1) * length) <= moment:
        k += 1
    return add_months(anchor, k * length), add_months(anchor, (k + 1) * length)


def month_starts(anchor: datetime | None, start: datetime, end: datetime) -> list[datetime]:
    """The starts of the allowance months counted from `anchor` that begin within [start, end):
    what a billing period pays for (twelve in a year, one in a month)."""
    starts = []
    month = months_from(anchor, start)
    if month[0] < start:
        month = months_from(anchor, month[1])
    while month[0] < end:
        starts.append(month[0])
        month = months_from(anchor, month[1])
    return starts


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


@dataclass
class Invoice:
    ref: str
    intent: str
    anchor: datetime | None  # its account's: the months it pays for are the account's
    start: datetime
    end: datetime
    tokens: int
    amount: int
    price: str
    refunded_minor: int = 0  # the largest cumulative refund seen
    reversed: int = 0  # tokens its refunds took back
    withheld: int = 0  # of those, withheld from its months before they began
    unused: int = 0  # what its ended months left unused (expired)
    claimed: int = 0  # of that, what refunds took back

    def month_starts(self) -> list[datetime]:
        return month_starts(self.anchor, self.start, self.end)

    @property
    def per_month(self) -> int:
        return self.tokens // len(self.month_starts())

    def pays_for(self, month_start: datetime) -> bool:
        return self.start <= month_start < self.end

    def not_begun(self, month_end: datetime) -> int:
        """Its months that begin at or after `month_end` (the current month's end)."""
        return sum(1 for start in self.month_starts() if start >= month_end)

    def share(self, month_start: datetime) -> int:
        """What refunds withheld from its month beginning at `month_start`: the last months first,
        each at most its per-month share."""
        starts = self.month_starts()
        later = len(starts) - 1 - starts.index(month_start)
        return min(self.per_month, max(0, self.withheld - later * self.per_month))


@dataclass
class Account:
    account_id: str
    plan: str
    allowance_per_month: int
    anchor: datetime | None  # None: calendar months
    start: datetime  # the current month
    end: datetime
    subscription: str | None = None
    interval: int = 0  # months per billing period (a subscriber's)
    paid_through: datetime | None = None
    granted: bool = False  # the current month was granted
    total: int = 0  # allowance_total: what the current month was granted
    allowance: int = 0
    purchased: int = 0
    debt: int = 0
    used: int = 0
    invoices: list[Invoice] = field(default_factory=list)

    def credit(self, pool: str, tokens: int) -> None:
        """Tokens coming in pay the debt first."""
        paid = min(self.debt, tokens)
        self.debt -= paid
        if pool == "allowance":
            self.allowance += tokens - paid
        else:
            self.purchased += tokens - paid

    def draw(self, tokens: int) -> None:
        """A charge: allowance first, then purchased; what neither has is debt."""
        from_allowance = min(tokens, self.allowance)
        from_purchased = min(tokens - from_allowance, self.purchased)
        self.allowance -= from_allowance
        self.purchased -= from_purchased
        self.debt += tokens - from_allowance - from_purchased

    def invoice_for(self, month_start: datetime) -> Invoice | None:
        paying = [invoice for invoice in self.invoices if invoice.pays_for(month_start)]
        return max(paying, key=lambda invoice: invoice.start, default=None)

    def begin_month(self) -> None:
        """The current month begins: granted when paid for (always without a subscription)."""
        self.used = 0
        self.granted = self.subscription is None or (self.paid_through is not None and self.start < self.paid_through)
        self.total = 0
        if self.granted:
            invoice = self.invoice_for(self.start) if self.subscription else None
            share = invoice.share(self.start) if invoice else 0
            self.total = max(0, self.allowance_per_month - share)
            self.credit("allowance", self.total)

    def roll(self, now: datetime) -> None:
        """At the month's end the allowance left expires, and the month containing now begins."""
        if now < self.end:
            return
        for invoice in self.invoices:
            if invoice.pays_for(self.start):
                invoice.unused += self.allowance
        self.allowance = 0
        self.start, self.end = months_from(self.anchor, now)
        self.begin_month()

    def change_plan(self, plan: str, allowance: int) -> None:
        """The new plan from the next month; and now, in a granted month, whatever its allowance
        (less the month's withheld share) exceeds what the month was granted."""
        invoice = self.invoice_for(self.start) if self.subscription else None
        month_allowance = allowance - (invoice.share(self.start) if invoice else 0)
        if self.granted and month_allowance > self.total:
            self.credit("allowance", month_allowance - self.total)
            self.total = month_allowance
        self.plan, self.allowance_per_month = plan, allowance

    def paid(self, invoice: Invoice) -> bool:
        """An invoice for a billing period: paid through its end; the month containing now is
        granted if it was not. True when it granted the month. Its months that ended before it
        came were never granted: their share counts as unused (a refund takes it from nothing)."""
        invoice.unused = invoice.per_month * sum(1 for start in invoice.month_starts() if start < self.start)
        self.invoices.append(invoice)
        self.paid_through = max(self.paid_through or invoice.end, invoice.end)
        if self.granted:
            return False
        used = self.used  # the same month: its count goes on, nothing in the pool expires
        self.begin_month()
        self.used = used
        return self.granted

    def refund(self, invoice: Invoice, cumulative: int) -> tuple[int, int]:
        """(tokens taken back, of which debt)."""
        if cumulative <= invoice.refunded_minor:
            return 0, 0
        refunded = min(cumulative, invoice.amount)
        target = invoice.tokens if refunded == invoice.amount else invoice.tokens * refunded // invoice.amount
        due = max(0, target - invoice.reversed)
        invoice.refunded_minor, invoice.reversed = cumulative, max(target, invoice.reversed)
        left = due
        # Its months not begun hold their per-month share each, less what refunds withheld already.
        withheld = max(0, min(left, invoice.not_begun(self.end) * invoice.per_month - invoice.withheld))
        invoice.withheld += withheld
        left -= withheld
        if invoice.pays_for(self.start):
            from_pool = min(left, self.allowance)
            self.allowance -= from_pool
            left -= from_pool
        from_unused = min(left, max(0, invoice.unused - invoice.claimed))
        invoice.claimed += from_unused
        left -= from_unused
        self.debt += left
        return due, left


class Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def machine(meter: RunningMeter, database_url: str) -> type[RuleBasedStateMachine]:

    class AllowanceMonths(ServerMachine):
        address = meter.address

        def __init__(self) -> None:
            super().__init__()
            self.database = self.run(asyncpg.connect(dsn(database_url)))
            self.accounts: dict[str, Account] = {}
            self.now = datetime.min.replace(tzinfo=UTC)

        def call(self, call: Awaitable[T]) -> T:
            try:
                return self.run(call)
            except grpc.aio.AioRpcError as error:
                raise Refused(error_info(error).reason) from None

        def teardown(self) -> None:
            self.run(self.database.close())
            super().teardown()

        # -- time ----------------------------------------------------------------------------

        def server_now(self) -> datetime:
            database_now: datetime = self.run(self.database.fetchval("SELECT now()"))
            return database_now + meter.clock.offset

        def clear_of_boundaries(self, target: datetime, anchors: list[datetime | None]) -> datetime:
            """`target`, or the month's end it would stop less than a minute before."""
            moved = True
            while moved:
                moved = False
                for anchor in anchors:
                    end = months_from(anchor, target)[1]
                    if end - target < MARGIN:
                        target, moved = end, True
            return target

        def move_to(self, target: datetime) -> None:
            target = self.clear_of_boundaries(target, [account.anchor for account in self.accounts.values()])
            if target <= self.now:
                return
            meter.clock.advance(target - self.server_now())
            self.now = target
            for account in self.accounts.values():
                account.roll(target)

        # -- setup ---------------------------------------------------------------------------

        @initialize(
            leap_year=st.booleans(),
            yearly=st.tuples(st.integers(0, 330), st.integers(60, 86_340)),
            monthly=st.tuples(st.integers(0, 27), st.integers(60, 86_340), st.sampled_from(SUBSCRIBED_PLANS)),
            calendar_plan=st.sampled_from(CALENDAR_PLANS),
            enterprise_allowance=st.sampled_from(ENTERPRISE_ALLOWANCES),
            links=st.tuples(st.booleans(), st.booleans()),
        )
        def open_accounts(
            self,
            leap_year: bool,
            yearly: tuple[int, int],
            monthly: tuple[int, int, str],
            calendar_plan: str,
            enterprise_allowance: int,
            links: tuple[bool, bool],
        ) -> None:
            """Three accounts; the subscribers' anchors `(days, seconds)` before now (with
            `leap_year`, the yearly one on the next 29th of February, the clock moved there)."""
            now = self.server_now().replace(microsecond=0) + MARGIN
            if leap_year:
                year = next(y for y in range(now.year + 1, now.year + 9) if calendar.isleap(y))
                yearly_anchor = datetime(year, 2, 29, 12, tzinfo=UTC)
                now = yearly_anchor + timedelta(days=yearly[0] % 60, seconds=yearly[1])
            else:
                yearly_anchor = now - timedelta(days=yearly[0], seconds=yearly[1])
            monthly_anchor = now - timedelta(days=monthly[0], seconds=monthly[1])
            now = self.clear_of_boundaries(now, [None, yearly_anchor, monthly_anchor])
            meter.clock.advance(now - self.server_now())
            self.now = now
            self.open_calendar_account(calendar_plan, enterprise_allowance)
            self.subscribe("yearly", yearly_anchor, 12, "pro", YEARLY_PRICE, links[0])
            self.subscribe("monthly", monthly_anchor, 1, monthly[2], f"price_{monthly[2]}_monthly", links[1])

        def open_calendar_account(self, plan: str, enterprise_allowance: int) -> None:
            account_id = new_id()
            allowance = enterprise_allowance if plan == "enterprise" else ALLOWANCE[plan]
            request = pb.SetPlanRequest(
                account_id=account_id, plan_id=plan, monthly_allowance_tokens=allowance if plan == "enterprise" else 0
            )
            self.run(self.stub.SetPlan(request))
            start, end = months_from(None, self.now)
            account = Account(account_id, plan, allowance, None, start, end)
            account.begin_month()
            self.accounts["calendar"] = account

        def subscribe(
            self, role: str, anchor: datetime, interval: int, plan: str, price: str, link_later: bool
        ) -> None:
            account_id, subscription = new_id(), new_id("sub")
            billing = months_from(anchor, self.now, interval)
            request = pb.SetPlanRequest(
                account_id=account_id, plan_id=plan, period_start=timestamp(billing[0]),
                period_end=timestamp(billing[1]), subscription_ref=subscription,
            )  # fmt: skip
            self.run(self.stub.SetPlan(request))
            start, end = months_from(anchor, self.now)
            account = Account(
                account_id, plan, ALLOWANCE[plan], anchor, start, end, subscription=subscription, interval=interval
            )
            account.begin_month()  # not granted: no invoice paid for it yet
            self.accounts[role] = account
            self.pay(account, billing, price, link_later)

        def pay(self, account: Account, billing: tuple[datetime, datetime], price: str, link_later: bool) -> None:
            """The invoice of the billing period, paid (its PaymentIntent named by the invoice,
            or linked by a later LinkInvoicePayment)."""
            assert account.subscription is not None
            tokens = len(month_starts(account.anchor, *billing)) * min(account.allowance_per_month, SOLD[price])
            invoice = Invoice(new_id("in"), new_id("pi"), account.anchor, *billing, tokens, PAID[price], price)
            answer = self.run(self.stub.GrantPeriodAllowance(self.invoice_paid(account, invoice, link_later)))
            assert answer.granted == account.paid(invoice), (answer.granted, account)
            if link_later:
                link = pb.LinkInvoicePaymentRequest(invoice_ref=invoice.ref, payment_intent=invoice.intent)
                self.run(self.stub.LinkInvoicePayment(link))

        def invoice_paid(self, account: Account, invoice: Invoice, link_later: bool) -> pb.GrantPeriodAllowanceRequest:
            period = {"period_start": timestamp(invoice.start), "period_end": timestamp(invoice.end)}
            line = pb.InvoiceLine(**period, stripe_price=invoice.price, amount_minor=invoice.amount)
            return pb.GrantPeriodAllowanceRequest(
                subscription_ref=account.subscription, invoice_ref=invoice.ref, **period,
                account_id=account.account_id, amount_minor=invoice.amount, currency="usd", lines=[line],
                payment_intent="" if link_later else invoice.intent,
            )  # fmt: skip

        # -- time passes ---------------------------------------------------------------------

        @rule(minutes=st.integers(1, 600))
        def minutes_pass(self, minutes: int) -> None:
            self.move_to(self.now + timedelta(minutes=minutes))

        @rule(days=st.integers(1, 45))
        def days_pass(self, days: int) -> None:
            self.move_to(self.now + timedelta(days=days))

        @rule(months=st.integers(1, 3))
        def months_pass(self, months: int) -> None:
            self.move_to(add_months(self.now, months))

        @rule(months=st.integers(4, 15))
        def many_months_pass(self, months: int) -> None:
            """An idle stretch: each account expires once and is granted once."""
            self.move_to(add_months(self.now, months))

        @rule(role=st.sampled_from(ROLES), after=st.booleans())
        def to_a_months_end(self, role: str, after: bool) -> None:
            """To a minute before an account's month ends, or to its end."""
            end = self.accounts[role].end
            self.move_to(end if after else end - MARGIN)

        @rule(role=st.sampled_from(SUBSCRIBERS), beyond=st.sampled_from([0, 60, 10 * 1440, 40 * 1440]))
        def past_paid_through(self, role: str, beyond: int) -> None:
            """To `beyond` minutes after the end of what the account's invoices paid for."""
            paid_through = self.accounts[role].paid_through
            if paid_through is not None and paid_through > self.now:
                self.move_to(paid_through + timedelta(minutes=beyond))

        # -- what accounts do ----------------------------------------------------------------

        @rule(
            role=st.sampled_from(ROLES),
            percent=st.integers(0, 110),
            usage=st.sampled_from(["all", "half", "more", "much more"]),
        )
        def spend(self, role: str, percent: int, usage: str) -> None:
            """Reserve `percent` of what is available (basic: weights 1, the hold its input and
            one output token) and Commit all of it, half, or more (what nothing pays for is debt)."""
            account = self.accounts[role]
            reserved = (account.allowance + account.purchased) * percent // 100
            reserve = pb.ReserveRequest(
                account_id=account.account_id, request_id=new_id("req"), model="basic", input_tokens=reserved,
                max_output_tokens=1,
            )  # fmt: skip
            expected = None
            if account.debt:
                expected = "ACCOUNT_IN_DEBT"
            elif account.allowance + account.purchased < reserved + 1:
                expected = "INSUFFICIENT_TOKENS"
            try:
                hold = self.call(self.stub.Reserve(reserve))
            except Refused as refusal:
                assert refusal.reason == expected, (refusal.reason, expected)
                return
            assert expected is None, expected
            charged = {
                "all": reserved,
                "half": reserved // 2,
                "more": reserved + 1_000,
                "much more": reserved + 300_000,
            }
            answer = self.run(
                self.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=charged[usage]))
            )
            before = account.debt
            account.draw(charged[usage])
            account.used += charged[usage]
            assert (answer.charged_tokens, answer.unbilled_tokens) == (charged[usage], account.debt - before)

        @rule(
            role=st.sampled_from(ROLES),
            pool=st.sampled_from(["allowance", "purchased"]),
            credit=st.booleans(),
            tokens=st.integers(1, 700_000),
            percent=st.integers(1, 120),
        )
        def adjust(self, role: str, pool: str, credit: bool, tokens: int, percent: int) -> None:
            """A credit of `tokens`, or a debit of `percent` of what the pool has (more than it
            has: refused)."""
            account = self.accounts[role]
            has = account.allowance if pool == "allowance" else account.purchased
            delta = tokens if credit else -max(1, has * percent // 100)
            request = pb.AdjustRequest(
                account_id=account.account_id, pool=pb.Pool.Value(f"POOL_{pool.upper()}"), delta=delta,
                reason="model", request_id=new_id("adj"),
            )  # fmt: skip
            try:
                self.call(self.stub.Adjust(request))
            except Refused as refusal:
                assert (refusal.reason, delta < 0, -delta > has) == ("INSUFFICIENT_TOKENS", True, True)
                return
            assert delta > 0 or -delta <= has, (delta, has)
            if delta > 0:
                account.credit(pool, delta)
            elif pool == "allowance":
                account.allowance += delta
            else:
                account.purchased += delta

        @rule(
            role=st.sampled_from(ROLES),
            plan=st.sampled_from(CALENDAR_PLANS),
            enterprise_allowance=st.sampled_from(ENTERPRISE_ALLOWANCES),
        )
        def change_plan(self, role: str, plan: str, enterprise_allowance: int) -> None:
            """Another plan (a subscriber's: one sold at a monthly price)."""
            account = self.accounts[role]
            allowance = enterprise_allowance if plan == "enterprise" else ALLOWANCE[plan]
            if account.subscription and plan not in SUBSCRIBED_PLANS:
                return
            request = pb.SetPlanRequest(
                account_id=account.account_id, plan_id=plan, subscription_ref=account.subscription or "",
                monthly_allowance_tokens=allowance if plan == "enterprise" else 0,
            )  # fmt: skip
            self.run(self.stub.SetPlan(request))
            account.change_plan(plan, allowance)

        @rule(role=st.sampled_from(SUBSCRIBERS), link_later=st.booleans())
        def renew(self, role: str, link_later: bool) -> None:
            """A subscriber whose paid months have ended pays for the billing period containing
            now: Stripe's subscription update (the new period), then its invoice."""
            account = self.accounts[role]
            assert account.subscription is not None and account.paid_through is not None and account.anchor
            if account.paid_through > self.now:
                return
            billing = months_from(account.anchor, self.now, account.interval)
            request = pb.SetPlanRequest(
                account_id=account.account_id, plan_id=account.plan, period_start=timestamp(billing[0]),
                period_end=timestamp(billing[1]), subscription_ref=account.subscription,
            )  # fmt: skip
            self.run(self.stub.SetPlan(request))
            price = YEARLY_PRICE if account.interval == 12 else f"price_{account.plan}_monthly"
            self.pay(account, billing, price, link_later)

        @rule(
            role=st.sampled_from(SUBSCRIBERS),
            back=st.integers(0, 2),
            twelfths=st.integers(1, 12),
            nudge=st.integers(-30, 30),
        )
        def refund(self, role: str, back: int, twelfths: int, nudge: int) -> None:
            """A refund of the account's latest invoice (or one `back` before it), cumulative:
            about `twelfths` of its amount (an older or repeated one changes nothing)."""
            account = self.accounts[role]
            invoice = account.invoices[max(0, len(account.invoices) - 1 - back)]
            cumulative = min(invoice.amount, max(1, invoice.amount * twelfths // 12 + nudge))
            request = pb.ReverseCreditRequest(
                payment_intent=invoice.intent, kind=pb.REVERSAL_KIND_REFUND, amount_minor=cumulative
            )
            answer = self.run(self.stub.ReverseCredit(request))
            expected = account.refund(invoice, cumulative)
            assert (answer.reversed_tokens, answer.unbilled_tokens) == expected, (answer, expected)

        @rule(role=st.sampled_from(SUBSCRIBERS), back=st.integers(0, 2))
        def invoice_again(self, role: str, back: int) -> None:
            """A paid invoice told again (a redelivered invoice.paid) changes nothing."""
            account = self.accounts[role]
            invoice = account.invoices[max(0, len(account.invoices) - 1 - back)]
            assert not self.run(self.stub.GrantPeriodAllowance(self.invoice_paid(account, invoice, True))).granted

        # -- what the service shows ------------------------------------------------------------

        @invariant()
        def balances_are_the_models(self) -> None:
            for role, account in self.accounts.items():
                b = self.run(self.stub.GetBalance(pb.GetBalanceRequest(account_id=account.account_id))).balance
                actual: dict[str, Any] = {
                    "plan": b.plan_id,
                    "month": (b.period_start.ToDatetime(UTC), b.period_end.ToDatetime(UTC)),
                    "paid_through": b.paid_through.ToDatetime(UTC) if b.HasField("paid_through") else None,
                    "allowance_total": b.allowance_total,
                    "allowance": b.allowance_remaining,
                    "purchased": b.purchased_remaining,
                    "debt": b.debt,
                    "used": b.used_this_period,
                    "held": b.held,
                    "available": b.available,
                }
                expected = {
                    "plan": account.plan,
                    "month": (account.start, account.end),
                    "paid_through": account.paid_through,
                    "allowance_total": account.total,
                    "allowance": account.allowance,
                    "purchased": account.purchased,
                    "debt": account.debt,
                    "used": account.used,
                    "held": 0,
                    "available": 0 if account.debt else account.allowance + account.purchased,
                }
                wrong = {name: (actual[name], expected[name]) for name in actual if actual[name] != expected[name]}
                assert not wrong, (role, self.now, wrong)

    return AllowanceMonths


async def test_allowance_months_balance_as_the_model_says(meters: Any, database_url: str) -> None:
    meter: RunningMeter = await meters(buckets=3)
    state_machine = machine(meter, database_url)
    options = settings(
        max_examples=40,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    await asyncio.to_thread(run_state_machine_as_test, state_machine, settings=options)


OPENING = {
    "leap_year": False,
    "yearly": (1, 3_600),  # month 0 of the year
    "monthly": (1, 3_600, "pro"),
    "calendar_plan": "starter",
    "enterprise_allowance": 0,
    "links": (False, False),
}


def replay(meter: RunningMeter, database_url: str, opening: dict[str, Any], steps: list[tuple[str, Any]]) -> None:
    """Run `steps` (rule, arguments) on a new machine, checking the balances after each."""
    state: Any = machine(meter, database_url)()
    try:
        state.open_accounts(**opening)
        state.balances_are_the_models()
        for rule_name, arguments in steps:
            getattr(state, rule_name)(**arguments)
            state.balances_are_the_models()
    finally:
        state.teardown()


async def test_an_upgraded_month_is_withheld_at_most_its_share(meters: Any, database_url: str) -> None:
    """Two twelfths refunded: months 10 and 11 withheld 500 000 each. On Business (5 000 000 a
    month), month 11 is granted 4 500 000 (withheld at most its 500 000 share), not 4 000 000."""
    steps = [
        ("change_plan", {"role": "yearly", "plan": "business", "enterprise_allowance": 0}),
        ("refund", {"role": "yearly", "back": 0, "twelfths": 2, "nudge": 0}),
        ("many_months_pass", {"months": 11}),
    ]
    await asyncio.to_thread(replay, await meters(buckets=3), database_url, OPENING, steps)


async def test_an_upgrade_keeps_what_a_refund_withheld(meters: Any, database_url: str) -> None:
    """Month 11 refunded before it began (granted 0); upgraded to Business in it, it is granted
    4 500 000 (Business less the refunded 500 000), not 5 000 000."""
    steps = [
        ("refund", {"role": "yearly", "back": 0, "twelfths": 1, "nudge": 0}),
        ("many_months_pass", {"months": 11}),
        ("change_plan", {"role": "yearly", "plan": "business", "enterprise_allowance": 0}),
    ]
    await asyncio.to_thread(replay, await meters(buckets=3), database_url, OPENING, steps)


async def test_a_downgrade_grants_nothing_in_a_month_a_refund_withheld(meters: Any, database_url: str) -> None:
    """Month 11 refunded before it began (granted 0); a downgrade to Starter in it applies from
    the next month: nothing is granted at once (not 50 000)."""
    steps = [
        ("refund", {"role": "yearly", "back": 0, "twelfths": 1, "nudge": 0}),
        ("many_months_pass", {"months": 11}),
        ("change_plan", {"role": "yearly", "plan": "starter", "enterprise_allowance": 0}),
    ]
    await asyncio.to_thread(replay, await meters(buckets=3), database_url, OPENING, steps)


async def test_a_year_renewed_from_29_february_is_refunded_from_its_eleven_months_to_come(
    meters: Any, database_url: str
) -> None:
    """Anchored on 29 February, renewed for [28 February, 28 February), refunded in full in its
    first month: eleven months not begun are withheld and the month's 500 000 leave the pool, no
    debt (its months are the 29th's, not counted from the 28th)."""
    steps = [
        ("past_paid_through", {"role": "yearly", "beyond": 0}),
        ("renew", {"role": "yearly", "link_later": False}),
        ("refund", {"role": "yearly", "back": 0, "twelfths": 12, "nudge": 0}),
    ]
    opening = OPENING | {"leap_year": True, "yearly": (0, 3_600)}
    await asyncio.to_thread(replay, await meters(buckets=3), database_url, opening, steps)
