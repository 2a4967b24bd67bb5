"""The Stripe edges where money leaked, each through the real webhook endpoint with signed events:
proration invoices that refilled the allowance, disputes that froze tokens for ever when their
events came out of order, and refunds, disputes and invoices of payments meter had not seen,
answered 503 for days."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_events import (
    PRICES,
    deliver,
    disputed,
    event_id,
    invoice_line,
    invoice_paid,
    invoice_payment_paid,
    paid_checkout,
    refunded,
    subscription_event,
)

from meter.domain.periods import add_months
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, balance_events, database_now, ledger, new_id

DAY = 86_400


async def applied(meter: RunningMeter, payload: bytes, status: str = "applied") -> dict[str, Any]:
    code, body = await deliver(meter.webhook_url, payload)
    assert (code, body["status"]) == (200, status), body
    return body


async def meter_now(meter: RunningMeter, engine: AsyncEngine) -> int:
    """The server's clock (the database's, moved by the test clock), in Unix seconds."""
    return int((await database_now(engine)).timestamp() + meter.clock.offset_seconds)


async def spend(meter: RunningMeter, account: str, tokens: int) -> None:
    hold = await meter.stub.Reserve(
        pb.ReserveRequest(
            account_id=account, request_id=new_id("r"), model="basic", input_tokens=tokens, max_output_tokens=1
        )
    )
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=tokens, output_tokens=0))


async def kinds(engine: AsyncEngine, account: str, *names: str) -> list[tuple[str, str, int]]:
    return [(e["kind"], e["pool"], e["amount"]) for e in await ledger(engine, account) if e["kind"] in names]


async def event_row(engine: AsyncEngine, payload: bytes) -> tuple[str, str]:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT account_id, status FROM webhook_events WHERE event_id = :e"), {"e": event_id(payload)}
            )
        ).one()
    return row.account_id, row.status


class Subscriber:
    """An account with a Stripe subscription, driven through the webhook endpoint."""

    def __init__(self, meter: RunningMeter, now: int, plan: str = "starter") -> None:
        self.meter, self.account, self.sub = meter, new_id(), new_id("sub")
        self.start, self.end, self.plan = now - DAY, now + 29 * DAY, plan

    def subscription(self, kind: str, plan: str, created: int) -> bytes:
        return subscription_event(
            kind, self.account, plan, created=created, start=self.start, end=self.end, sub=self.sub
        )

    def period_invoice(self, start: int, end: int, plan: str, amount: int, invoice: str = "") -> bytes:
        line = invoice_line(start, end, PRICES[plan], amount, sub=self.sub)
        return invoice_paid(self.sub, [line], account=self.account, amount=amount, invoice=invoice)

    async def begin(self, created: int) -> bytes:
        await applied(self.meter, self.subscription("created", self.plan, created))
        invoice = self.period_invoice(self.start, self.end, self.plan, 1000)
        await applied(self.meter, invoice)
        return invoice


class TestProration:
    async def test_an_upgrade_invoiced_at_once_never_refills_the_allowance(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        """Starter, 45 000 used, upgraded to pro (455 000 left: right), then the proration invoice
        Stripe sends at once: it used to expire 455 000, grant 500 000 and forget the usage."""
        now = await meter_now(meter, engine)
        subscriber = Subscriber(meter, now)
        await subscriber.begin(now - 30)
        await spend(meter, subscriber.account, 45_000)
        await applied(meter, subscriber.subscription("updated", "pro", now - 20))
        upgraded = await balance(meter.stub, subscriber.account)
        assert (upgraded.allowance_remaining, upgraded.used_this_period) == (455_000, 45_000)

        proration = invoice_paid(
            subscriber.sub,
            [
                invoice_line(now, subscriber.end, PRICES["starter"], -900, proration=True, sub=subscriber.sub),
                invoice_line(now, subscriber.end, PRICES["pro"], 1800, proration=True, sub=subscriber.sub),
            ],
            account=subscriber.account,
            amount=900,
            reason="subscription_update",
        )
        await applied(meter, proration)
        after = await balance(meter.stub, subscriber.account)
        assert (after.allowance_remaining, after.used_this_period) == (455_000, 45_000)
        assert after.period_start == upgraded.period_start
        assert await kinds(engine, subscriber.account, "subscription_grant", "expiry") == [
            ("subscription_grant", "allowance", 50_000),
            ("subscription_grant", "allowance", 450_000),
        ]

    async def test_a_line_billing_part_of_the_paid_period_is_a_proration_however_it_is_marked(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        """The issue's own reproduction: billing_reason subscription_update and one subscription
        line [now, P.end), not marked as a proration. A new billing period is never inside the
        one already paid."""
        now = await meter_now(meter, engine)
        subscriber = Subscriber(meter, now)
        await subscriber.begin(now - 30)
        await spend(meter, subscriber.account, 45_000)
        await applied(meter, subscriber.subscription("updated", "pro", now - 20))
        line = invoice_line(now, subscriber.end, PRICES["pro"], 900, sub=subscriber.sub)
        upgrade = invoice_paid(
            subscriber.sub, [line], account=subscriber.account, amount=900, reason="subscription_update"
        )
        await applied(meter, upgrade)
        after = await balance(meter.stub, subscriber.account)
        assert (after.allowance_remaining, after.used_this_period) == (455_000, 45_000)
        assert [a for _, _, a in await kinds(engine, subscriber.account, "subscription_grant", "expiry")] == [
            50_000,
            450_000,
        ]

    @pytest.mark.parametrize("marked", [True, False], ids=["marked", "unmarked"])
    async def test_a_renewal_whose_first_lines_are_prorations_grants_the_new_period_once(
        self, meter: RunningMeter, engine: AsyncEngine, marked: bool
    ) -> None:
        now = await meter_now(meter, engine)
        subscriber = Subscriber(meter, now)
        await subscriber.begin(now - 30)
        meter.clock.advance(timedelta(seconds=subscriber.end - now + 60))
        renewal_end = subscriber.end + 30 * DAY
        lines = [
            invoice_line(now, subscriber.end, PRICES["starter"], -400, proration=marked, sub=subscriber.sub),
            invoice_line(now, subscriber.end, PRICES["pro"], 800, proration=marked, sub=subscriber.sub),
            invoice_line(subscriber.end, renewal_end, PRICES["pro"], 2000, sub=subscriber.sub),
        ]
        invoice_ref = new_id("in")
        renewal = invoice_paid(subscriber.sub, lines, account=subscriber.account, amount=2400, invoice=invoice_ref)
        await applied(meter, renewal)
        again = invoice_paid(subscriber.sub, lines, account=subscriber.account, amount=2400, invoice=invoice_ref)
        await applied(meter, again)  # another event for the same invoice grants nothing more
        after = await balance(meter.stub, subscriber.account)
        # Months are counted from the new billing period (30 days long here: not a month of the old one).
        renewed = datetime.utcfromtimestamp(subscriber.end)
        assert after.period_start.ToDatetime() == renewed
        assert after.period_end.ToDatetime() == add_months(renewed, 1)
        assert after.paid_through.ToDatetime() == datetime.utcfromtimestamp(renewal_end)
        grants = await kinds(engine, subscriber.account, "subscription_grant")
        assert [amount for _, _, amount in grants] == [50_000, 50_000]  # once; the plan is SetPlan's (starter)


class TestDisputeOrder:
    """Whatever order a dispute's events arrive in, the end state is its last status's."""

    async def _bought(self, meter: RunningMeter) -> tuple[str, str]:
        account, intent = new_id(), new_id("pi")
        purchase = paid_checkout(account, pack="pack_100k_tokens", tokens="100000", amount=900, intent=intent)
        await applied(meter, purchase)
        return account, intent

    @pytest.mark.parametrize(
        "order",
        list(itertools.permutations(["created", "updated", "closed"])),
        ids=lambda order: "-".join(order),
    )
    async def test_a_won_dispute_leaves_nothing_frozen_in_any_order(
        self, meter: RunningMeter, engine: AsyncEngine, order: tuple[str, ...]
    ) -> None:
        account, intent = await self._bought(meter)
        dispute = new_id("dp")
        sent = {
            "created": disputed(intent, "needs_response", dispute=dispute),
            "updated": disputed(intent, "under_review", dispute=dispute, kind="charge.dispute.updated"),
            "closed": disputed(intent, "won", dispute=dispute, kind="charge.dispute.closed"),
        }
        for name in order:
            await applied(meter, sent[name])
        assert (await balance(meter.stub, account)).purchased_remaining == 100_000
        moved = sum(amount for _, _, amount in await kinds(engine, account, "dispute_freeze", "dispute_release"))
        assert moved == 0

    async def test_closed_won_delivered_before_created(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        """Stripe retried the first delivery after the dispute closed: the pack used to stay frozen."""
        account, intent = await self._bought(meter)
        await applied(meter, disputed(intent, "won", dispute="dp_1", kind="charge.dispute.closed"))
        await applied(meter, disputed(intent, "needs_response", dispute="dp_1"))
        assert (await balance(meter.stub, account)).purchased_remaining == 100_000
        assert await kinds(engine, account, "dispute_freeze", "dispute_release") == []

    async def test_a_lost_dispute_keeps_the_tokens_taken_in_any_order(self, meter: RunningMeter) -> None:
        for first, second in (("lost", "needs_response"), ("needs_response", "lost")):
            account, intent = await self._bought(meter)
            for status in (first, second):
                kind = "charge.dispute.closed" if status == "lost" else "charge.dispute.created"
                await applied(meter, disputed(intent, status, dispute="dp_2", kind=kind))
            assert (await balance(meter.stub, account)).purchased_remaining == 0, (first, second)


class TestSubscriptionPaymentReversals:
    """A refund or dispute of a subscription payment takes back its share of the allowance the
    payment bought; the invoice is found through the PaymentIntent an invoice_payment.paid names."""

    async def _paid(self, meter: RunningMeter, engine: AsyncEngine, plan: str = "pro") -> tuple[Subscriber, str]:
        now = await meter_now(meter, engine)
        subscriber = Subscriber(meter, now, plan)
        invoice_ref, intent = new_id("in"), new_id("pi")
        await applied(meter, subscriber.subscription("created", plan, now - 30))
        await applied(meter, subscriber.period_invoice(subscriber.start, subscriber.end, plan, 2000, invoice_ref))
        await applied(meter, invoice_payment_paid(invoice_ref, intent, 2000))
        return subscriber, intent

    async def test_a_refund_takes_back_its_share_and_spent_tokens_become_debt(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        subscriber, intent = await self._paid(meter, engine)
        await spend(meter, subscriber.account, 100_000)
        await applied(meter, refunded(intent, 1000, 2000))  # half: 250 000 of the 500 000 it bought
        half = await balance(meter.stub, subscriber.account)
        assert (half.allowance_remaining, half.debt) == (150_000, 0)
        await applied(meter, refunded(intent, 2000, 2000))  # all: 250 000 more, 100 000 of them spent
        full = await balance(meter.stub, subscriber.account)
        assert (full.allowance_remaining, full.debt) == (0, 100_000)
        assert await kinds(engine, subscriber.account, "refund") == [
            ("refund", "allowance", -250_000),
            ("refund", "allowance", -150_000),
            ("refund", "debt", -100_000),
        ]

    async def test_after_the_period_ended_only_what_it_used_becomes_debt(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        """The allowance the period left unused expired at its end: a refund afterwards takes it
        back from nothing, and makes debt only of what the customer used of it."""
        subscriber, intent = await self._paid(meter, engine)
        await spend(meter, subscriber.account, 100_000)
        now = await meter_now(meter, engine)
        meter.clock.advance(timedelta(seconds=subscriber.end - now + 60))
        await applied(meter, subscriber.period_invoice(subscriber.end, subscriber.end + 30 * DAY, "pro", 2000))
        await applied(meter, refunded(intent, 2000, 2000))
        after = await balance(meter.stub, subscriber.account)
        assert (after.allowance_remaining, after.debt, after.available) == (500_000, 100_000, 0)
        assert await kinds(engine, subscriber.account, "refund") == [("refund", "debt", -100_000)]
        # The event tells what the balance lost (the ledger's 100 000, all debt), and how many of
        # the payment's tokens the refund reversed (400 000 of them had expired with the period).
        [told] = [
            e["payload"] for e in await balance_events(engine, subscriber.account) if e["type"] == "credit.reversed"
        ]
        assert (told["tokens"], told["debt"], told["payment_tokens"]) == (100_000, 100_000, 500_000)

    async def test_a_dispute_freezes_the_allowance_and_a_won_one_gives_it_back(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        subscriber, intent = await self._paid(meter, engine)
        await spend(meter, subscriber.account, 100_000)
        await applied(meter, disputed(intent, "needs_response", dispute="dp_s"))
        frozen = await balance(meter.stub, subscriber.account)
        assert (frozen.allowance_remaining, frozen.debt) == (0, 100_000)
        await applied(meter, disputed(intent, "won", dispute="dp_s", kind="charge.dispute.closed"))
        back = await balance(meter.stub, subscriber.account)
        assert (back.allowance_remaining, back.debt) == (400_000, 0)

    async def test_a_refund_before_its_invoice_and_payment_waits_and_lands_once(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        """Every event of the chain arrives before what it refers to: each is answered 2xx and
        applied, once, when its turn comes."""
        now = await meter_now(meter, engine)
        subscriber = Subscriber(meter, now, "pro")
        invoice_ref, intent = new_id("in"), new_id("pi")
        refund = refunded(intent, 2000, 2000)
        link = invoice_payment_paid(invoice_ref, intent, 2000)
        invoice = subscriber.period_invoice(subscriber.start, subscriber.end, "pro", 2000, invoice_ref)
        await applied(meter, refund, "pending")
        await applied(meter, link, "pending")
        await applied(meter, invoice, "pending")  # its subscription is not linked yet
        await applied(meter, subscriber.subscription("created", "pro", now - 30))
        after = await balance(meter.stub, subscriber.account)
        assert (after.plan_id, after.allowance_total, after.allowance_remaining, after.debt) == ("pro", 500_000, 0, 0)
        for payload in (refund, link, invoice):
            assert await event_row(engine, payload) == (subscriber.account, "applied")
            await applied(meter, payload, "duplicate")
        assert await kinds(engine, subscriber.account, "subscription_grant", "refund") == [
            ("subscription_grant", "allowance", 500_000),
            ("refund", "allowance", -500_000),
        ]


class TestOlderApiVersions:
    async def test_a_charge_naming_its_invoice_waits_for_that_invoice(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        """Before API 2025-03-31 a Charge names its invoice: its refund waits for the invoice,
        even one that names no PaymentIntent (and no invoice_payment.paid will ever come)."""
        now = await meter_now(meter, engine)
        subscriber = Subscriber(meter, now, "pro")
        await applied(meter, subscriber.subscription("created", "pro", now - 30))
        invoice_ref = new_id("in")
        refund = refunded(new_id("pi"), 1000, 2000, invoice=invoice_ref)
        await applied(meter, refund, "pending")
        await applied(meter, subscriber.period_invoice(subscriber.start, subscriber.end, "pro", 2000, invoice_ref))
        assert (await balance(meter.stub, subscriber.account)).allowance_remaining == 250_000
        assert await event_row(engine, refund) == (subscriber.account, "applied")


class TestPaymentsMeterNeverSold:
    """Answered 2xx: a 5xx is left for what a retry can fix."""

    async def test_a_refund_or_dispute_of_an_unknown_payment_is_pending(self, meter: RunningMeter) -> None:
        intent = new_id("pi")
        await applied(meter, refunded(intent, 500, 1000), "pending")
        await applied(meter, disputed(intent, "needs_response", dispute=new_id("dp")), "pending")

    async def test_an_invoice_of_another_products_subscription(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        now = await meter_now(meter, engine)
        line = invoice_line(now - DAY, now + 29 * DAY, "price_other_product", 500, sub="sub_other")
        foreign = invoice_paid("sub_other", [line], account=None, amount=500)
        await applied(meter, foreign, "pending")  # no metadata at all: it may yet be linked
        labelled = json_with_metadata(foreign, {"product": "other"})
        await applied(meter, labelled, "ignored")  # metadata without account_id: not one meter sold


def json_with_metadata(payload: bytes, metadata: dict[str, str]) -> bytes:
    import json
    import uuid

    data = json.loads(payload)
    data["id"] = f"evt_test_{uuid.uuid4().hex[:16]}"
    data["data"]["object"]["parent"]["subscription_details"]["metadata"] = metadata
    return json.dumps(data).encode()
