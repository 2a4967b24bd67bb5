"""A yearly subscription, end to end through signed Stripe events, the server's clock moved month by
month: a yearly invoice pays for twelve monthly allowances (the pricing page sells Pro at 500 000
tokens a month), each granted at its month's start and what it leaves expiring at its end; a refund
takes back from the months not yet begun, the last first; a cancellation whose allowance lasts its
paid months keeps them until the paid year ends, then the free tier's calendar months follow; a
dispute freezes the months not begun and a won one gives them back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_events import disputed, invoice_line, invoice_paid, invoice_payment_paid, refunded, subscription_event
from test_plans_as_sold import StartMeter, packaged
from test_stripe_edges import applied, meter_now, spend

from meter.domain.periods import add_months
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, balance_events, ledger, new_id

YEARLY = "price_pro_yearly"
YEAR_CENTS = 120_000
PRO = 500_000
DAY = 86_400


class Year:
    """A Pro subscriber on the yearly price whose year began a day ago, its invoice paid."""

    def __init__(self, meter: RunningMeter, now: int) -> None:
        self.meter, self.account, self.sub = meter, new_id(), new_id("sub")
        self.invoice, self.intent = new_id("in"), new_id("pi")
        anchor = datetime.fromtimestamp(now - DAY, UTC)
        self.months = [add_months(anchor, k) for k in range(13)]  # the year's month starts, and its end
        self.start, self.end = int(anchor.timestamp()), int(self.months[12].timestamp())

    def subscription(self, kind: str, created: int) -> bytes:
        return subscription_event(
            kind, self.account, "pro", created=created, start=self.start, end=self.end, price=YEARLY, sub=self.sub
        )

    async def begin(self, now: int) -> None:
        await applied(self.meter, self.subscription("created", now - 30))
        line = invoice_line(self.start, self.end, YEARLY, YEAR_CENTS, sub=self.sub)
        await applied(
            self.meter, invoice_paid(self.sub, [line], account=self.account, amount=YEAR_CENTS, invoice=self.invoice)
        )
        await applied(self.meter, invoice_payment_paid(self.invoice, self.intent, YEAR_CENTS))

    async def into_month(self, engine: AsyncEngine, month: int) -> pb.Balance:
        """The balance a minute after month `month` (0-11; 12: the year's end) began."""
        target = self.months[month].timestamp() + 60
        self.meter.clock.advance(timedelta(seconds=target - await meter_now(self.meter, engine)))
        return await balance(self.meter.stub, self.account)


def at(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


async def grants(engine: AsyncEngine, account: str) -> list[int]:
    return [e["amount"] for e in await ledger(engine, account) if e["kind"] == "subscription_grant"]


async def test_a_yearly_invoice_pays_for_twelve_monthly_allowances(meter: RunningMeter, engine: AsyncEngine) -> None:
    year = Year(meter, await meter_now(meter, engine))
    await year.begin(await meter_now(meter, engine))
    first = await balance(meter.stub, year.account)
    assert (at(first.period_start.ToDatetime()), at(first.period_end.ToDatetime())) == (
        at(year.months[0]),
        at(year.months[1]),
    )
    assert int(first.paid_through.ToSeconds()) == year.end  # the billing period, apart from the month
    assert (first.allowance_total, first.allowance_remaining) == (PRO, PRO)
    for month in range(1, 12):
        if month == 3:
            await spend(meter, year.account, 100_000)  # what a month uses is not given back
        now = await year.into_month(engine, month)
        assert at(now.period_start.ToDatetime()) == at(year.months[month])
        assert (now.plan_id, now.allowance_total, now.allowance_remaining) == ("pro", PRO, PRO)
    assert await grants(engine, year.account) == [PRO] * 12
    expiries = [e["amount"] for e in await ledger(engine, year.account) if e["kind"] == "expiry"]
    assert expiries == [-PRO] * 2 + [-(PRO - 100_000)] + [-PRO] * 8  # each month's leftover, at its end
    unpaid = await year.into_month(engine, 12)  # the year ended and no renewal was paid
    assert (unpaid.allowance_total, unpaid.allowance_remaining) == (0, 0)
    assert await grants(engine, year.account) == [PRO] * 12


async def test_a_refund_in_month_four_and_a_cancellation(meters: StartMeter, engine: AsyncEngine) -> None:
    """A twelfth of the year refunded in its fourth month takes back its last month, not yet begun
    (nothing leaves the balance now); cancelled in its sixth month, Pro's allowance goes on each
    month until the paid year ends (the twelfth, refunded, gets nothing), then the free tier's."""
    meter = await meters(catalog=packaged())  # the free tier a cancelled subscription returns to
    year = Year(meter, await meter_now(meter, engine))
    await year.begin(await meter_now(meter, engine))
    for month in range(1, 4):
        await year.into_month(engine, month)
    await spend(meter, year.account, 100_000)
    await applied(meter, refunded(year.intent, YEAR_CENTS // 12, YEAR_CENTS))
    refunded_now = await balance(meter.stub, year.account)
    assert (refunded_now.allowance_remaining, refunded_now.debt) == (PRO - 100_000, 0)
    told = [e["payload"] for e in await balance_events(engine, year.account) if e["type"] == "credit.reversed"]
    assert [(p["tokens"], p["payment_tokens"]) for p in told] == [(0, PRO)]  # from a month not begun

    for month in range(4, 6):
        assert (await year.into_month(engine, month)).allowance_total == PRO
    cancelled_at = await meter_now(meter, engine)
    await applied(meter, year.subscription("deleted", cancelled_at))
    cancelled = await balance(meter.stub, year.account)
    assert (cancelled.plan_id, cancelled.allowance_remaining) == ("starter", PRO)  # the paid months go on
    assert int(cancelled.paid_through.ToSeconds()) == year.end
    for month in range(6, 11):
        now = await year.into_month(engine, month)
        assert (now.allowance_total, now.allowance_remaining) == (PRO, PRO)
    last = await year.into_month(engine, 11)
    assert (last.allowance_total, last.allowance_remaining) == (0, 0)  # refunded before it began
    assert await grants(engine, year.account) == [PRO] * 11

    free = await year.into_month(engine, 12)
    assert (free.plan_id, free.allowance_total) == ("starter", 50_000)
    assert not free.HasField("paid_through")
    assert at(free.period_start.ToDatetime()).day == 1  # calendar months from here on
    assert await grants(engine, year.account) == [PRO] * 11 + [50_000]


async def test_a_dispute_won_months_later_gives_the_months_it_froze_back(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    """Disputed in its first month: what that month left leaves the pool (what it spent becomes debt)
    and months 1 and 2 begin with nothing. Won in month 2, the invoice still paying for it: months
    3-11 are whole again, and what the freeze took from the months that began (month 0's and the
    grants of months 1 and 2) comes back to month 2's allowance, the debt paid first."""
    year = Year(meter, await meter_now(meter, engine))
    await year.begin(await meter_now(meter, engine))
    await spend(meter, year.account, 100_000)
    await applied(meter, disputed(year.intent, "needs_response", dispute="dp_year"))
    frozen = await balance(meter.stub, year.account)
    assert (frozen.allowance_remaining, frozen.debt) == (0, 100_000)  # 400 000 left the pool, 100 000 spent
    for month in (1, 2):
        now = await year.into_month(engine, month)
        assert (now.allowance_total, now.allowance_remaining, now.debt) == (0, 0, 100_000)  # frozen before it began
    await applied(meter, disputed(year.intent, "won", dispute="dp_year", kind="charge.dispute.closed"))
    won = await balance(meter.stub, year.account)
    # 500 000 (month 0's) + 2 x 500 000 (months 1 and 2's), the debt paid first; the month is whole.
    assert (won.allowance_total, won.allowance_remaining, won.debt) == (PRO, 3 * PRO - 100_000, 0)
    for month in range(3, 12):
        now = await year.into_month(engine, month)
        assert (now.allowance_total, now.allowance_remaining) == (PRO, PRO)
    released = [e["amount"] for e in await ledger(engine, year.account) if e["kind"] == "dispute_release"]
    assert released == [3 * PRO]


async def test_a_year_paid_after_its_first_month_ended_refunds_without_debt(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    """The invoice of a year that began over a month ago arrives in its second month (a webhook
    delivered late, a reconciliation): the first month had ended unpaid and was never granted, so
    nothing of it was spent. Refunded whole, the year takes back its months not begun and the
    current month's allowance; the ended month's share is taken back from nothing, not as debt."""
    year = Year(meter, await meter_now(meter, engine))
    year.meter.clock.advance(timedelta(seconds=year.months[1].timestamp() + 60 - await meter_now(meter, engine)))
    await year.begin(await meter_now(meter, engine))
    late = await balance(meter.stub, year.account)
    assert at(late.period_start.ToDatetime()) == at(year.months[1])
    assert (late.allowance_total, late.allowance_remaining) == (PRO, PRO)
    assert await grants(engine, year.account) == [PRO]  # the ended month is not granted
    await spend(meter, year.account, 100_000)
    await applied(meter, refunded(year.intent, YEAR_CENTS, YEAR_CENTS))
    after = await balance(meter.stub, year.account)
    assert (after.allowance_remaining, after.debt) == (0, 100_000)  # only what month 1 spent is owed
    taken = [e["amount"] for e in await ledger(engine, year.account) if e["kind"] == "refund"]
    assert sorted(taken) == sorted([-(PRO - 100_000), -100_000])  # month 1's pool, then what it spent
