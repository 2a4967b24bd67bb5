"""Renewals whose payment fails: invoice.payment_failed is told as subscription.payment_failed,
the subscription going past_due (and back) as subscription.status_changed, and the month the
failed invoice pays for gets its allowance only once a later attempt pays it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_events import (
    PRICES,
    deliver,
    event_id,
    invoice_line,
    invoice_paid,
    invoice_payment_failed,
    subscription_event,
)

from meter.domain.periods import add_months
from support import RunningMeter, balance, balance_events, database_now, new_id, suite_catalog

StartMeter = Any
DAY = 86_400


def month_after(start: int) -> int:
    return int(add_months(datetime.fromtimestamp(start, UTC), 1).timestamp())


async def told(engine: AsyncEngine, account: str, *types: str) -> list[tuple[str, dict[str, Any]]]:
    """The events of these types, each one's data without the balance after it."""
    events = await balance_events(engine, account)
    return [
        (e["type"], {k: v for k, v in e["payload"].items() if k != "balance"}) for e in events if e["type"] in types
    ]


async def paid_subscriber(meter: RunningMeter, engine: AsyncEngine) -> tuple[str, str, int, int]:
    """A Pro subscriber whose first month is paid: the account, the subscription, now and the
    period's end."""
    account, sub = new_id(), new_id("sub_")
    now = int((await database_now(engine)).timestamp())
    start = now - 10 * DAY
    end = month_after(start)
    created = subscription_event("created", account, "pro", created=now - 60, start=start, end=end, sub=sub)
    assert (await deliver(meter.webhook_url, created))[1]["status"] == "applied"
    first = invoice_paid(sub, [invoice_line(start, end, PRICES["pro"], 2000, sub=sub)], account=account, amount=2000)
    assert (await deliver(meter.webhook_url, first))[1]["status"] == "applied"
    return account, sub, now, end


async def test_a_renewal_that_fails_is_told_and_its_month_waits_for_the_payment(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    account, sub, now, end = await paid_subscriber(meter, engine)
    assert (await balance(meter.stub, account)).allowance_remaining == 500_000

    # The renewal: Stripe moves the period on, and its invoice's first attempt fails.
    meter.clock.advance(timedelta(seconds=end - now + 60))
    renewed_end, renewal = month_after(end), new_id("in_")
    retry_at = end + 3 * DAY
    line = invoice_line(end, renewed_end, PRICES["pro"], 2000, sub=sub)
    failed = invoice_payment_failed(
        sub, [line], account=account, amount=2000, invoice=renewal, attempts=1, next_attempt=retry_at
    )
    assert (await deliver(meter.webhook_url, failed))[1]["status"] == "applied"
    assert (await deliver(meter.webhook_url, failed))[1]["status"] == "duplicate"
    past_due = subscription_event(
        "updated", account, "pro", created=end + 30, start=end, end=renewed_end, sub=sub, status="past_due"
    )
    assert (await deliver(meter.webhook_url, past_due))[1]["status"] == "applied"
    unpaid_month = await balance(meter.stub, account)
    assert (unpaid_month.allowance_total, unpaid_month.allowance_remaining) == (0, 0)  # waits for its payment
    assert await told(engine, account, "subscription.payment_failed", "subscription.status_changed") == [
        (
            "subscription.payment_failed",
            {
                "subscription_ref": sub,
                "invoice_ref": renewal,
                "amount_minor": 2000,
                "currency": "usd",
                "attempt_count": 1,
                "next_attempt_at": datetime.fromtimestamp(retry_at, UTC).isoformat(),
                "billing_reason": "subscription_cycle",
            },
        ),
        (
            "subscription.status_changed",
            {"subscription_ref": sub, "status": "past_due", "previous_status": "active", "grace_until": None},
        ),
    ]

    # A later attempt pays it: the month's allowance comes, and the subscription is active again.
    paid = invoice_paid(sub, [line], account=account, amount=2000, invoice=renewal)
    assert (await deliver(meter.webhook_url, paid))[1]["status"] == "applied"
    active = subscription_event("updated", account, "pro", created=end + 90, start=end, end=renewed_end, sub=sub)
    assert (await deliver(meter.webhook_url, active))[1]["status"] == "applied"
    assert (await balance(meter.stub, account)).allowance_remaining == 500_000
    changes = await told(engine, account, "subscription.status_changed")
    assert [(p["previous_status"], p["status"]) for _, p in changes] == [("active", "past_due"), ("past_due", "active")]
    async with engine.connect() as connection:
        status = await connection.scalar(
            text("SELECT subscription_status FROM accounts WHERE account_id = :a"), {"a": account}
        )
    assert status == "active"


@pytest.mark.parametrize("status_first", [True, False], ids=["past_due-with-the-new-period", "active-then-past_due"])
async def test_a_plan_with_a_grace_keeps_granting_while_stripe_retries(
    meters: StartMeter, engine: AsyncEngine, status_first: bool
) -> None:
    """Pro with past_due_grace_days = 7: the month a failed renewal begins is granted as if paid,
    whichever of the subscription's updates comes first; the payment that succeeds later grants
    nothing more, and the grace ends with it."""
    catalog = suite_catalog()
    pro = replace(catalog.plans["pro"], past_due_grace_days=7)
    meter = await meters(catalog=replace(catalog, plans={**catalog.plans, "pro": pro}))
    account, sub, now, end = await paid_subscriber(meter, engine)
    meter.clock.advance(timedelta(seconds=end - now + 60))
    renewed_end = month_after(end)
    period = {"start": end, "end": renewed_end, "sub": sub}
    if not status_first:  # the new period arrives first (the month begins unpaid), then past_due
        moved = subscription_event("updated", account, "pro", created=end + 10, **period)
        assert (await deliver(meter.webhook_url, moved))[1]["status"] == "applied"
        assert (await balance(meter.stub, account)).allowance_total == 0
    past_due = subscription_event("updated", account, "pro", created=end + 30, status="past_due", **period)
    assert (await deliver(meter.webhook_url, past_due))[1]["status"] == "applied"
    graced = await balance(meter.stub, account)
    assert (graced.allowance_total, graced.allowance_remaining) == (500_000, 500_000)
    [change] = [p for _, p in await told(engine, account, "subscription.status_changed")]
    assert change["status"] == "past_due" and change["grace_until"] is not None

    line = invoice_line(end, renewed_end, PRICES["pro"], 2000, sub=sub)
    paid = invoice_paid(sub, [line], account=account, amount=2000, invoice=new_id("in_"))
    assert (await deliver(meter.webhook_url, paid))[1]["status"] == "applied"
    active = subscription_event("updated", account, "pro", created=end + 90, **period)
    assert (await deliver(meter.webhook_url, active))[1]["status"] == "applied"
    after = await balance(meter.stub, account)
    assert (after.allowance_total, after.allowance_remaining) == (500_000, 500_000)  # granted once
    async with engine.connect() as connection:
        grace = await connection.scalar(text("SELECT grace_until FROM accounts WHERE account_id = :a"), {"a": account})
    assert grace is None


async def test_a_failure_of_a_subscription_not_linked_yet_waits_for_it(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    """Stripe sends events in any order: the failure of the first invoice arrives before the
    subscription; it is told once the subscription links the account, with no retry left."""
    account, sub, invoice = new_id(), new_id("sub_"), new_id("in_")
    now = int((await database_now(engine)).timestamp())
    end = month_after(now)
    line = invoice_line(now, end, PRICES["pro"], 2000, sub=sub)
    failed = invoice_payment_failed(
        sub, [line], account=account, amount=2000, invoice=invoice, attempts=4, next_attempt=None
    )
    status, body = await deliver(meter.webhook_url, failed)
    assert (status, body["status"]) == (200, "pending")
    created = subscription_event(
        "created", account, "pro", created=now, start=now, end=end, sub=sub, status="incomplete"
    )
    assert (await deliver(meter.webhook_url, created))[1]["status"] == "applied"
    payloads = [p for _, p in await told(engine, account, "subscription.payment_failed")]
    assert [(p["invoice_ref"], p["attempt_count"], p["next_attempt_at"]) for p in payloads] == [(invoice, 4, None)]
    async with engine.connect() as connection:
        stored = await connection.scalar(
            text("SELECT status FROM webhook_events WHERE event_id = :id"), {"id": event_id(failed)}
        )
    assert stored == "applied"
