"""The packaged catalog's plans as the pricing page sells them: Starter is the free tier, 50 000
tokens a month, the plan of every account without a subscription; a cancelled subscription falls
back to it, and what is left of the paid period's allowance ends as the cancelled plan says."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_events import (
    PRICES,
    deliver,
    disputed,
    invoice_line,
    invoice_paid,
    invoice_payment_paid,
    paid_checkout,
    refunded,
    subscription_event,
)

from meter import catalog as catalog_file
from meter.catalog import Catalog
from meter.domain.periods import add_months
from meter.domain.plans import CancelledAllowance, Rollover
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, balance_events, database_now, ledger, new_id

StartMeter = Any
DAY = 86_400


def packaged() -> Catalog:
    return catalog_file.load().without_limits()


async def subscribed_to_pro(meter: RunningMeter, engine: AsyncEngine) -> tuple[str, int, int]:
    """A Pro subscriber whose period's invoice is paid: 500 000 tokens until `end`."""
    account, sub = new_id(), new_id("sub_")
    now = int((await database_now(engine)).timestamp())
    start = now - 10 * DAY
    end = int(add_months(datetime.fromtimestamp(start, UTC), 1).timestamp())  # a monthly price's period
    created = subscription_event("created", account, "pro", created=now - 60, start=start, end=end, sub=sub)
    assert (await deliver(meter.webhook_url, created))[1]["status"] == "applied"
    invoice = invoice_paid(sub, [invoice_line(start, end, PRICES["pro"], 2000, sub=sub)], account=account, amount=2000)
    assert (await deliver(meter.webhook_url, invoice))[1]["status"] == "applied"
    paid = await balance(meter.stub, account)
    assert (paid.plan_id, paid.allowance_remaining) == ("pro", 500_000)
    return account, now, end


async def pro_paid_by(meter: RunningMeter, engine: AsyncEngine, *, used: int) -> tuple[str, str, int, int]:
    """A Pro subscriber whose period's invoice a PaymentIntent paid (so that its refund can name
    it), having used `used` tokens: the account, the PaymentIntent, now and the period's end."""
    account, sub, invoice, intent = new_id(), new_id("sub_"), new_id("in_"), new_id("pi_")
    now = int((await database_now(engine)).timestamp())
    start, end = now - 10 * DAY, int(add_months(datetime.fromtimestamp(now - 10 * DAY, UTC), 1).timestamp())
    created = subscription_event("created", account, "pro", created=now - 60, start=start, end=end, sub=sub)
    assert (await deliver(meter.webhook_url, created))[1]["status"] == "applied"
    line = invoice_line(start, end, PRICES["pro"], 2000, sub=sub)
    paid = invoice_paid(sub, [line], account=account, amount=2000, invoice=invoice)
    assert (await deliver(meter.webhook_url, paid))[1]["status"] == "applied"
    assert (await deliver(meter.webhook_url, invoice_payment_paid(invoice, intent, 2000)))[1]["status"] == "applied"
    hold = await meter.stub.Reserve(
        pb.ReserveRequest(
            account_id=account, request_id=new_id("r"), model="basic", input_tokens=used - 1, max_output_tokens=1
        )
    )
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=used, output_tokens=0))
    return account, intent, now, end


async def cancel(meter: RunningMeter, account: str, now: int, end: int) -> pb.Balance:
    deleted = subscription_event("deleted", account, "pro", created=now, start=now - 10 * DAY, end=end)
    assert (await deliver(meter.webhook_url, deleted))[1]["status"] == "applied"
    return await balance(meter.stub, account)


async def test_an_account_without_a_subscription_is_on_the_free_tier(meters: StartMeter) -> None:
    meter = await meters(catalog=packaged())
    account = new_id()
    await deliver(meter.webhook_url, paid_checkout(account))  # opened by its first purchase
    opened = await balance(meter.stub, account)
    assert (opened.plan_id, opened.allowance_remaining, opened.purchased_remaining) == ("starter", 50_000, 1000)
    catalog = await meter.stub.GetCatalog(pb.GetCatalogRequest())
    assert catalog.default_plan == "starter"
    cancelled = {plan.id: plan.cancelled_allowance for plan in catalog.plans}
    assert cancelled["pro"] == pb.CANCELLED_ALLOWANCE_ENDS_WITH_PERIOD
    assert cancelled["starter"] == pb.CANCELLED_ALLOWANCE_ENDS_NOW


async def test_a_cancelled_pro_subscription_keeps_its_paid_period_then_gets_the_free_tier(
    meters: StartMeter, engine: AsyncEngine
) -> None:
    meter = await meters(catalog=packaged())
    account, now, end = await subscribed_to_pro(meter, engine)
    cancelled = await cancel(meter, account, now, end)
    assert (cancelled.plan_id, cancelled.allowance_remaining) == ("starter", 500_000)  # paid for, until `end`
    assert int(cancelled.period_end.ToSeconds()) == int(cancelled.paid_through.ToSeconds()) == end

    meter.clock.advance(timedelta(seconds=end - now + 60))
    after = await balance(meter.stub, account)
    assert (after.plan_id, after.allowance_total, after.allowance_remaining) == ("starter", 50_000, 50_000)
    told = [e["payload"] for e in await balance_events(engine, account) if e["type"] == "plan.cancelled"]
    assert [(p["plan_id"], p["previous_plan_id"], p["subscription_ref"]) for p in told] == [("starter", "pro", None)]


async def test_a_plan_whose_allowance_ends_now_falls_to_the_free_tier_at_once(
    meters: StartMeter, engine: AsyncEngine
) -> None:
    catalog = packaged()
    plans = {**catalog.plans, "pro": replace(catalog.plans["pro"], cancelled_allowance=CancelledAllowance.ENDS_NOW)}
    meter = await meters(catalog=replace(catalog, plans=plans))
    account, now, end = await subscribed_to_pro(meter, engine)
    cancelled = await cancel(meter, account, now, end)
    assert (cancelled.plan_id, cancelled.allowance_total, cancelled.allowance_remaining) == ("starter", 50_000, 50_000)


async def test_a_plan_that_converts_leaves_what_is_left_as_a_grant(meters: StartMeter, engine: AsyncEngine) -> None:
    """Cancelled on a plan whose allowance converts: what is left of the month (500 000 less what
    was used) becomes a rollover grant living 60 days, beside the free tier's calendar month."""
    catalog = packaged()
    pro = replace(catalog.plans["pro"], cancelled_allowance=CancelledAllowance.CONVERTS, converted_allowance_days=60)
    meter = await meters(catalog=replace(catalog, plans={**catalog.plans, "pro": pro}))
    account, now, end = await subscribed_to_pro(meter, engine)
    hold = await meter.stub.Reserve(
        pb.ReserveRequest(
            account_id=account, request_id=new_id("r"), model="basic", input_tokens=99, max_output_tokens=1
        )
    )
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=100, output_tokens=0))
    cancelled = await cancel(meter, account, now, end)
    assert (cancelled.plan_id, cancelled.allowance_total, cancelled.granted_remaining) == ("starter", 50_000, 499_900)
    grants = (await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))).grants
    rolled = next(g for g in grants if g.source == pb.GRANT_SOURCE_ROLLOVER)
    assert rolled.remaining == 499_900
    lifetime = rolled.expires_at.ToSeconds() - int((await database_now(engine)).timestamp())
    assert 60 * DAY - 120 <= lifetime <= 60 * DAY
    told = [e["payload"] for e in await balance_events(engine, account) if e["type"] == "grant.created"]
    assert [(p["source"], p["tokens"]) for p in told] == [("rollover", 499_900)]


async def test_a_refund_of_a_rolled_over_month_takes_back_from_its_rollover_grant(
    meters: StartMeter, engine: AsyncEngine
) -> None:
    """Pro rolling at most 300 000 of a month over for 30 days: 100 000 used, of the 400 000 left
    300 000 roll over at the month's end (100 000 expire). Refunded whole afterwards, the invoice
    takes back the expired 100 000 from nothing, the rolled-over 300 000 from their grant, and only
    the 100 000 that were spent become debt."""
    catalog = packaged()
    pro = replace(catalog.plans["pro"], rollover=Rollover(300_000, 30))
    meter = await meters(catalog=replace(catalog, plans={**catalog.plans, "pro": pro}))
    account, intent, now, end = await pro_paid_by(meter, engine, used=100_000)

    meter.clock.advance(timedelta(seconds=end - now + 60))  # the month ended; the next is not paid
    rolled = await balance(meter.stub, account)
    assert (rolled.allowance_remaining, rolled.granted_remaining) == (0, 300_000)

    assert (await deliver(meter.webhook_url, refunded(intent, 2000, 2000)))[1]["status"] == "applied"
    after = await balance(meter.stub, account)
    assert (after.granted_remaining, after.debt) == (0, 100_000)
    reversed_ = [e for e in await balance_events(engine, account) if e["type"] == "credit.reversed"]
    assert [(e["payload"]["payment_tokens"], e["payload"]["debt"]) for e in reversed_] == [(500_000, 100_000)]


async def test_a_won_dispute_of_a_rolled_over_month_gives_back_to_its_rollover_grant(
    meters: StartMeter, engine: AsyncEngine
) -> None:
    """As above, disputed instead: the freeze takes 300 000 from the rollover grant and makes
    100 000 debt; the dispute won gives the 300 000 back to that grant (live for its 30 days, not
    to a month that ends sooner) and the 100 000 that were debt, and nothing else."""
    catalog = packaged()
    pro = replace(catalog.plans["pro"], rollover=Rollover(300_000, 30))
    meter = await meters(catalog=replace(catalog, plans={**catalog.plans, "pro": pro}))
    account, intent, now, end = await pro_paid_by(meter, engine, used=100_000)
    meter.clock.advance(timedelta(seconds=end - now + 60))
    rolled = (await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))).grants
    rollover = next(g for g in rolled if g.source == pb.GRANT_SOURCE_ROLLOVER)

    dispute = new_id("dp_")
    assert (await deliver(meter.webhook_url, disputed(intent, "needs_response", dispute=dispute)))[1]["status"] == (
        "applied"
    )
    frozen = await balance(meter.stub, account)
    assert (frozen.granted_remaining, frozen.debt) == (0, 100_000)

    won = disputed(intent, "won", dispute=dispute, kind="charge.dispute.closed")
    assert (await deliver(meter.webhook_url, won))[1]["status"] == "applied"
    after = await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))
    assert (after.balance.granted_remaining, after.balance.debt, after.balance.purchased_remaining) == (300_000, 0, 0)
    assert [(g.grant_id, g.remaining) for g in after.grants if g.source == pb.GRANT_SOURCE_ROLLOVER] == [
        (rollover.grant_id, 300_000)
    ]
    given = [(e["pool"], e["amount"]) for e in await ledger(engine, account) if e["kind"] == "dispute_release"]
    assert given == [("purchased", 100_000), (f"grant:{rollover.grant_id}", 300_000)]  # the debt paid first
    won_told = [e["payload"] for e in await balance_events(engine, account) if e["type"] == "dispute.won"]
    assert [(p["tokens"], p["payment_tokens"]) for p in won_told] == [(400_000, 500_000)]


async def test_a_refund_after_a_conversion_takes_back_from_the_converted_grant(
    meters: StartMeter, engine: AsyncEngine
) -> None:
    """Pro converting what is left at its cancellation: 100 000 used, 400 000 converted, and the
    free tier's month begun (50 000). The invoice refunded whole afterwards takes back, as the
    rules order it, the current month's allowance (the invoice's period still covers the month),
    then the converted 400 000 from their grant, and only the rest becomes debt."""
    catalog = packaged()
    pro = replace(catalog.plans["pro"], cancelled_allowance=CancelledAllowance.CONVERTS, converted_allowance_days=30)
    meter = await meters(catalog=replace(catalog, plans={**catalog.plans, "pro": pro}))
    account, intent, now, end = await pro_paid_by(meter, engine, used=100_000)
    cancelled = await cancel(meter, account, now, end)
    assert cancelled.granted_remaining == 400_000

    assert (await deliver(meter.webhook_url, refunded(intent, 2000, 2000)))[1]["status"] == "applied"
    after = await balance(meter.stub, account)
    assert (after.allowance_remaining, after.granted_remaining, after.debt) == (0, 0, 50_000)
    taken = [(e["pool"].split(":")[0], e["amount"]) for e in await ledger(engine, account) if e["kind"] == "refund"]
    assert sorted(taken) == [("allowance", -50_000), ("debt", -50_000), ("grant", -400_000)]
