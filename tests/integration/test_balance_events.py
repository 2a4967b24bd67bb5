"""Balance events (the outbox): each fact is one event, written by the transaction that made its
change, numbered 1, 2, 3 … per account, with the balance after the change; a change that fails
writes none."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_events import deliver, paid_checkout

from meter import metrics
from meter.storage.audit import audit
from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc
from support import (
    RunningMeter,
    balance,
    balance_events,
    database_now,
    eventually,
    expect_error,
    first_answer,
    new_id,
    pack_purchase,
    reserve_request,
)


def types(found: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in found]


async def test_a_purchase_is_one_event_with_its_amounts_and_the_balance_after(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    account, ref = new_id(), new_id("cs")
    await meter.stub.CreditPurchase(pack_purchase(account, payment_ref=ref))
    await meter.stub.CreditPurchase(pack_purchase(account, payment_ref=ref))  # a replay: no new fact
    found = await balance_events(engine, account)
    # The purchase opened the account on the free plan (no allowance): one event.
    assert types(found) == ["purchase.credited"]
    [purchased] = found
    assert purchased["sequence"] == 1
    assert purchased["payload"]["payment_ref"] == ref
    assert purchased["payload"]["tokens"] == 1000 and purchased["payload"]["amount_minor"] == 100
    after = purchased["payload"]["balance"]
    now = await balance(meter.stub, account)
    assert after["purchased_remaining"] == now.purchased_remaining == 1000
    assert after["plan_id"] == "free" and after["debt"] == 0


async def test_a_paid_purchase_the_catalog_refuses_is_told_once_with_its_reason(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    """The customer paid: the product must hear of it to refund and apologise, once per payment,
    however often Stripe redelivers it and through whichever of its events."""
    account, session = new_id(), new_id("cs")
    completed = paid_checkout(account, tokens="5000", session=session)  # the pack sells 1000
    for payload in (
        completed,
        completed,
        paid_checkout(account, tokens="5000", session=session, event_type="checkout.session.async_payment_succeeded"),
    ):
        status, body = await deliver(meter.webhook_url, payload)
        assert (status, body["status"]) == (200, "rejected"), body
        assert body["reason"].startswith("PURCHASE_MISMATCH")
    found = await balance_events(engine, account)
    assert types(found) == ["purchase.refused"]  # the account was opened for it: the customer exists
    refused = found[0]["payload"]
    assert refused | {"balance": None} == {
        "payment_ref": session,
        "pack_id": "pack_1000_tokens",
        "tokens": 5000,
        "amount_minor": 100,
        "currency": "usd",
        "reason": "PURCHASE_MISMATCH",
        "message": "tokens is 5000, the catalog says 1000",
        "balance": None,
    }
    assert refused["balance"]["purchased_remaining"] == 0
    # A purchase credited first is never refused later (a redelivery after a catalog change).
    credited = new_id("cs")
    await meter.stub.CreditPurchase(pack_purchase(account, payment_ref=credited))
    await expect_error(
        meter.stub.CreditPurchase(pack_purchase(account, payment_ref=credited, tokens=7)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "PURCHASE_MISMATCH",
    )
    assert types(await balance_events(engine, account)) == ["purchase.refused", "purchase.credited"]
    assert (await audit(engine, account)).clean


async def test_plan_adjustments_and_a_refused_correction(meter: RunningMeter, engine: AsyncEngine) -> None:
    account = new_id()
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
    await meter.stub.Adjust(
        pb.AdjustRequest(
            account_id=account, pool=pb.POOL_PURCHASED, delta=500, reason="goodwill", request_id=new_id("adj")
        )
    )
    await expect_error(
        meter.stub.Adjust(
            pb.AdjustRequest(
                account_id=account, pool=pb.POOL_PURCHASED, delta=-900, reason="too much", request_id=new_id("adj")
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_TOKENS",
    )
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="pro"))
    found = await balance_events(engine, account)
    assert types(found) == [
        "allowance.granted",  # the starter plan's first period
        "plan.changed",
        "balance.adjusted",  # the refused correction wrote nothing
        "allowance.granted",  # the upgrade's difference
        "plan.changed",
    ]
    assert [event["sequence"] for event in found] == [1, 2, 3, 4, 5]
    assert found[0]["payload"]["tokens"] == 50_000 and found[0]["payload"]["reason"] == "period"
    assert found[1]["payload"] == found[1]["payload"] | {"plan_id": "starter", "previous_plan_id": None}
    assert found[2]["payload"]["delta"] == 500 and found[2]["payload"]["balance"]["purchased_remaining"] == 500
    assert found[3]["payload"]["tokens"] == 500_000 - 50_000 and found[3]["payload"]["reason"] == "upgrade"
    assert found[4]["payload"]["previous_plan_id"] == "starter"
    assert found[4]["payload"]["balance"]["allowance_total"] == 500_000


async def test_a_new_period_expires_the_allowance_left_and_grants_the_next(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    account = new_id()
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
    hold = await meter.stub.Reserve(reserve_request(account, input_tokens=500, max_output_tokens=500))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=500, output_tokens=500))
    before = await balance(meter.stub, account)
    now = await database_now(engine)
    meter.clock.advance(before.period_end.ToDatetime().replace(tzinfo=now.tzinfo) - now + timedelta(seconds=1))
    await balance(meter.stub, account)  # the first call after the boundary moves the account on
    found = await balance_events(engine, account)
    assert types(found)[-2:] == ["allowance.expired", "allowance.granted"]
    assert found[-2]["payload"]["tokens"] == 50_000 - 1000
    assert found[-1]["payload"]["tokens"] == 50_000
    assert found[-1]["payload"]["balance"]["allowance_remaining"] == 50_000


async def test_refunds_disputes_and_warnings(meter: RunningMeter, engine: AsyncEngine) -> None:
    account, intent = new_id(), new_id("pi")
    await meter.stub.CreditPurchase(pack_purchase(account, payment_intent=intent))
    hold = await meter.stub.Reserve(reserve_request(account, input_tokens=450, max_output_tokens=450))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=450, output_tokens=400))
    await meter.stub.ReverseCredit(pb.ReverseCreditRequest(payment_intent=intent, kind=pb.REVERSAL_KIND_DISPUTE))
    await meter.stub.ReverseCredit(pb.ReverseCreditRequest(payment_intent=intent, kind=pb.REVERSAL_KIND_DISPUTE))
    await meter.stub.ReverseCredit(pb.ReverseCreditRequest(payment_intent=intent, kind=pb.REVERSAL_KIND_DISPUTE_WON))
    found = await balance_events(engine, account)
    # 850 of 1000 used: 80 % crossed, by the Commit. The dispute takes the 1000 back (150 from the
    # pool, 850 as debt): the account is exhausted, and the levels it jumped past are each told
    # once. The repeated dispute changed nothing; the won dispute gives the tokens back.
    assert [(event["type"], event["payload"].get("level")) for event in found] == [
        ("purchase.credited", None),
        ("balance.warning", "80"),
        ("credit.reversed", None),
        ("debt.created", None),
        ("balance.warning", "90"),
        ("balance.warning", "95"),
        ("balance.warning", "exhausted"),
        ("debt.cleared", None),  # the tokens given back pay the debt first
        ("dispute.won", None),
    ]
    assert found[1]["payload"]["used"] == 850
    assert found[3]["payload"]["debt"] == 850 and found[3]["payload"]["balance"]["debt"] == 850
    assert found[7]["payload"]["balance"]["debt"] == 0
    reversed_, won = found[2]["payload"], found[8]["payload"]
    assert (reversed_["kind"], reversed_["tokens"], reversed_["debt"]) == ("dispute", 1000, 850)
    assert reversed_["balance"]["debt"] == 850 and reversed_["balance"]["purchased_remaining"] == 0
    assert won["tokens"] == 1000 and won["balance"]["debt"] == 0 and won["balance"]["purchased_remaining"] == 150
    assert [event["sequence"] for event in found] == list(range(1, 10))


async def test_debt_is_told_when_it_is_created_and_when_it_is_cleared_once_each(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    account = new_id()
    await meter.stub.CreditPurchase(pack_purchase(account))
    holds = [await meter.stub.Reserve(reserve_request(account)) for _ in range(2)]
    for hold in holds:  # each uses 1000 where it held 100: the first makes debt, the second adds to it
        await meter.stub.Commit(
            pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=500, output_tokens=500)
        )
    assert (await balance(meter.stub, account)).debt == 1000
    await meter.stub.CreditPurchase(pack_purchase(account))  # pays the 1000 of debt exactly
    found = [event for event in await balance_events(engine, account) if event["type"] != "balance.warning"]
    assert types(found) == ["purchase.credited", "debt.created", "debt.cleared", "purchase.credited"]
    created, cleared = found[1]["payload"], found[2]["payload"]
    # The first Commit: 1000 charged, its 100 held and the 800 available pay 900, 100 is debt.
    assert created["ref"] == holds[0].reservation_id and created["debt"] == 100
    assert created["balance"]["debt"] == created["debt"]
    assert cleared["balance"]["debt"] == 0 and cleared["balance"]["purchased_remaining"] == 0
    assert found[3]["payload"]["balance"]["debt"] == 0


async def test_a_grant_that_pays_the_debt_tells_both_with_the_new_period_in_the_balance(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    account = new_id()
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
    hold = await meter.stub.Reserve(reserve_request(account))
    # 60 000 used where the period had 50 000: 10 000 of debt.
    await meter.stub.Commit(
        pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=30_000, output_tokens=30_000)
    )
    before = await balance(meter.stub, account)
    assert before.debt == 10_000
    now = await database_now(engine)
    meter.clock.advance(before.period_end.ToDatetime().replace(tzinfo=now.tzinfo) - now + timedelta(seconds=1))
    await balance(meter.stub, account)
    found = [event for event in await balance_events(engine, account) if event["type"] != "balance.warning"]
    assert types(found)[-3:] == ["debt.created", "debt.cleared", "allowance.granted"]
    cleared, granted = found[-2]["payload"], found[-1]["payload"]
    assert cleared["balance"]["debt"] == 0
    assert cleared["balance"]["allowance_total"] == 50_000 and cleared["balance"]["allowance_remaining"] == 40_000
    assert cleared["balance"]["period_start"] != found[-3]["payload"]["balance"]["period_start"]
    assert granted["debt_paid"] == 10_000 and granted["balance"] == cleared["balance"]


async def test_list_events_pages_by_sequence_with_the_balance_after_each(meter: RunningMeter) -> None:
    account = new_id()
    for _ in range(5):
        await meter.stub.CreditPurchase(pack_purchase(account))
    first = await meter.stub.ListEvents(pb.ListEventsRequest(account_id=account, page_size=2))
    assert [e.sequence for e in first.events] == [1, 2] and first.last_sequence == 2 and first.more
    event = first.events[1]
    assert event.type == "purchase.credited" and event.account_id == account and event.event_id
    assert event.data["tokens"] == 1000 and event.data["pack_id"] == "pack_1000_tokens"
    assert event.balance.purchased_remaining == 2000 and event.balance.plan_id == "free"
    assert event.occurred_at.seconds > 0
    rest = await meter.stub.ListEvents(pb.ListEventsRequest(account_id=account, after_sequence=first.last_sequence))
    assert [e.sequence for e in rest.events] == [3, 4, 5] and rest.last_sequence == 5 and not rest.more
    assert rest.events[-1].balance.purchased_remaining == 5000
    assert len({e.event_id for e in [*first.events, *rest.events]}) == 5
    empty = await meter.stub.ListEvents(pb.ListEventsRequest(account_id=account, after_sequence=5))
    assert (list(empty.events), empty.last_sequence, empty.more) == ([], 5, False)


async def test_list_events_refuses_what_it_cannot_answer(meter: RunningMeter) -> None:
    await expect_error(
        meter.stub.ListEvents(pb.ListEventsRequest(account_id="acct-nobody-has")),
        grpc.StatusCode.NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    )
    account = new_id()
    await meter.stub.CreditPurchase(pack_purchase(account))
    for request in (
        pb.ListEventsRequest(account_id=account, after_sequence=-1),
        pb.ListEventsRequest(account_id=account, page_size=1001),
    ):
        await expect_error(meter.stub.ListEvents(request), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")


async def _received(stream, count: int) -> list[pb.BalanceEvent]:  # type: ignore[no-untyped-def]
    """The next `count` messages of a stream, with a deadline (a lost event must fail, not hang)."""

    async def read() -> list[pb.BalanceEvent]:
        return [(await stream.read()).event for _ in range(count)]

    return await asyncio.wait_for(read(), timeout=15)


async def test_watch_events_streams_what_happened_then_each_new_event_as_it_commits(meters) -> None:  # type: ignore[no-untyped-def]
    watched, other_replica = await meters(), await meters()
    account = new_id()
    await watched.stub.CreditPurchase(pack_purchase(account))
    stream = watched.stub.WatchEvents(pb.WatchEventsRequest(account_id=account))
    [first] = await _received(stream, 1)
    assert (first.sequence, first.type, first.balance.purchased_remaining) == (1, "purchase.credited", 1000)
    # Written through the other server: the database's notice reaches this one's watcher.
    await other_replica.stub.CreditPurchase(pack_purchase(account))
    await other_replica.stub.Adjust(
        pb.AdjustRequest(account_id=account, pool=pb.POOL_PURCHASED, delta=5, reason="bonus", request_id=new_id("a"))
    )
    second, third = await _received(stream, 2)
    assert [(e.sequence, e.type) for e in (second, third)] == [(2, "purchase.credited"), (3, "balance.adjusted")]
    assert third.balance.purchased_remaining == 2005
    stream.cancel()


async def test_a_watcher_resumes_after_a_restart_with_no_gap_and_no_duplicate(meters) -> None:  # type: ignore[no-untyped-def]
    meter = await meters()
    account = new_id()
    await meter.stub.CreditPurchase(pack_purchase(account))
    async with grpc.aio.insecure_channel(meter.address) as channel:  # not the one meter.stop() closes
        stream = meter_pb2_grpc.MeterServiceStub(channel).WatchEvents(pb.WatchEventsRequest(account_id=account))
        [seen] = await _received(stream, 1)
        await meter.stop()  # the stream ends, OK, when the server starts to stop
        assert await asyncio.wait_for(stream.read(), timeout=15) is grpc.aio.EOF
        assert await stream.code() == grpc.StatusCode.OK
    later = await meters()
    for _ in range(2):
        await later.stub.CreditPurchase(pack_purchase(account))
    resumed = later.stub.WatchEvents(pb.WatchEventsRequest(account_id=account, after_sequence=seen.sequence))
    assert [e.sequence for e in await _received(resumed, 2)] == [2, 3]
    resumed.cancel()


async def test_watchers_beyond_the_reads_they_may_run_at_once_wait_their_turn_and_miss_nothing(meters) -> None:  # type: ignore[no-untyped-def]
    """METER_WATCH_READS bounds the watchers' reads a process runs at once (so that replays never
    take the database pool from Reserve and Commit: `meter bench --watchers`); with one at a time,
    ten watchers still each get every event, in order."""
    meter = await meters(watch_reads=1)
    account = new_id()
    for _ in range(3):
        await meter.stub.CreditPurchase(pack_purchase(account))
    start = (await meter.stub.ListEvents(pb.ListEventsRequest(account_id=account))).events[0].position
    mine = [meter.stub.WatchEvents(pb.WatchEventsRequest(account_id=account)) for _ in range(8)]
    everyone = [meter.stub.WatchEvents(pb.WatchEventsRequest(after_position=start)) for _ in range(2)]
    replayed = await asyncio.gather(*(_received(stream, 3) for stream in mine))
    replayed += await asyncio.gather(*(_received(stream, 2) for stream in everyone))
    await meter.stub.CreditPurchase(pack_purchase(account))  # heard by every watcher, after its replay
    heard = await asyncio.gather(*(_received(stream, 1) for stream in mine + everyone))
    for stream, before, after in zip(mine + everyone, replayed, heard, strict=True):
        stream.cancel()
        assert [(e.account_id, e.sequence) for e in before + after][-3:] == [(account, n) for n in (2, 3, 4)]


async def test_watch_events_refuses_an_unknown_account(meter: RunningMeter) -> None:
    stream = meter.stub.WatchEvents(pb.WatchEventsRequest(account_id="acct-nobody-has"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await asyncio.wait_for(stream.read(), timeout=15)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


async def test_watching_every_account_waits_for_a_slower_transaction_and_resumes_by_position(
    meters, engine: AsyncEngine
) -> None:  # type: ignore[no-untyped-def]
    """Positions follow transaction ids, not commit order: an event of a transaction that began
    earlier but commits later is still sent before the events that committed meanwhile, and
    resuming after the last position sent after a restart misses nothing and repeats nothing."""
    meter = await meters()
    first = new_id()
    await meter.stub.CreditPurchase(pack_purchase(first))
    listed = await meter.stub.ListEvents(pb.ListEventsRequest(account_id=first))
    start = listed.events[-1].position
    async with engine.connect() as slow:  # a transaction that begins now and commits last
        await slow.execute(text("BEGIN"))
        await slow.execute(text("SELECT pg_current_xact_id()"))
        second = new_id()
        await meter.stub.CreditPurchase(pack_purchase(second))  # committed while `slow` runs
        stream = meter.stub.WatchEvents(pb.WatchEventsRequest(after_position=start))
        await slow.execute(
            text("SELECT meter_emit(:a, 'plan.changed', CAST(:d AS jsonb), now())"),
            {"a": first, "d": '{"plan_id": "free", "previous_plan_id": "free", "subscription_ref": null}'},
        )
        await slow.execute(text("COMMIT"))
        early, late = await _received(stream, 2)
    assert [(e.account_id, e.type) for e in (early, late)] == [(first, "plan.changed"), (second, "purchase.credited")]
    await meter.stop()  # the stream ends; a watcher reconnects with the last position it was sent
    later = await meters()
    third = new_id()
    await later.stub.CreditPurchase(pack_purchase(third))
    resumed = later.stub.WatchEvents(pb.WatchEventsRequest(after_position=late.position))
    [next_one] = await _received(resumed, 1)
    assert (next_one.account_id, next_one.sequence) == (third, 1)
    resumed.cancel()
    await expect_error(
        first_answer(later.stub.WatchEvents(pb.WatchEventsRequest(after_sequence=3))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )
    await expect_error(
        first_answer(later.stub.WatchEvents(pb.WatchEventsRequest(after_position="not one"))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )


async def test_a_position_is_ascii_digits_within_what_it_is_read_into(meter: RunningMeter) -> None:
    """A position's transaction is an xid8 (64 bits, unsigned), its sequence a bigint; Unicode
    digits, and numbers past either, are refused INVALID_FIELD (they reached the database)."""
    xid8_max, int64_max = 2**64 - 1, 2**63 - 1
    for position in (f"²-1-{new_id()}", f"{xid8_max + 1}-1-acct", f"1-{int64_max + 1}-acct", "１-1-acct", "9" * 300):
        info = await expect_error(
            first_answer(meter.stub.WatchEvents(pb.WatchEventsRequest(after_position=position))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
        )
        assert info.metadata["field"] == "after_position"
    with pytest.raises(TimeoutError):  # the largest: no event after it yet, so the stream waits
        await first_answer(
            meter.stub.WatchEvents(pb.WatchEventsRequest(after_position=f"{xid8_max}-{int64_max}-acct")), within=0.5
        )


async def test_a_watcher_that_hangs_up_mid_stream_is_cancelled_not_an_error(
    meter: RunningMeter, caplog: pytest.LogCaptureFixture
) -> None:
    """A watcher that goes away while meter is sending: the stream is closed by the event loop in
    another task; counted CANCELLED, logged as such, with no traceback (it fired the alert on
    server errors)."""
    account = new_id()
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="free"))
    # More events than HTTP/2's flow control lets meter send before the watcher reads them.
    await asyncio.gather(
        *(
            meter.stub.Adjust(
                pb.AdjustRequest(
                    account_id=account, pool=pb.POOL_PURCHASED, delta=1, reason="x" * 500, request_id=new_id()
                )
            )
            for _ in range(60)
        )
    )
    counted = {code: metrics.RPCS.labels("WatchEvents", code) for code in ("CANCELLED", "INTERNAL")}
    before = {code: counter._value.get() for code, counter in counted.items()}
    caplog.set_level(logging.INFO)
    async with grpc.aio.insecure_channel(meter.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        stream = meter_pb2_grpc.MeterServiceStub(channel).WatchEvents(pb.WatchEventsRequest(account_id=account))
        await stream.read()  # and hang up

    async def after() -> dict[str, float]:
        return {code: counter._value.get() - before[code] for code, counter in counted.items()}

    assert await eventually(after, lambda counts: counts["CANCELLED"] > 0) == {"CANCELLED": 1, "INTERNAL": 0}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    logged = [r.getMessage() for r in caplog.records if r.name == "meter.rpc" and "WatchEvents" in r.getMessage()]
    assert len(logged) == 1 and logged[0].startswith("WatchEvents CANCELLED"), logged
