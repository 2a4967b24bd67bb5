"""Credit grants: an account's own tokens (promotions, goodwill) with a priority and an optional
expiry, drawn with its two pools in one order: priority (lowest first), then the soonest expiry,
then the oldest. A hold takes from them in that order, records what it took from each and gives
back to exactly those; what a grant has left at its expiry expires once (by the sweeper or by the
first call that finds it due), and what a hold gives back to it after that expires too; a revoked
grant's remainder goes and what was spent stays spent. `meter audit` (run after every test)
checks each grant's rows against its ledger entries."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.catalog import Pack, Plan
from meter.domain.plans import Rollover
from meter.service.sweeper import sweep_once
from meter.v1 import meter_pb2 as pb
from support import (
    RunningMeter,
    balance_events,
    database_now,
    expect_error,
    funded_account,
    ledger,
    new_id,
    reserve_request,
    run_cli,
    suite_catalog,
)

StartMeter = Any


async def server_now(meter: RunningMeter, engine: AsyncEngine) -> datetime:
    return await database_now(engine) + meter.clock.offset


def at(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def grant(
    meter: RunningMeter, account: str, tokens: int, *, expires_at: datetime | None = None, priority: int = 0,
    request_id: str | None = None, source: int = pb.GRANT_SOURCE_PROMOTION,
) -> pb.GrantResponse:  # fmt: skip
    request = pb.GrantRequest(
        account_id=account, request_id=request_id or new_id("g"), tokens=tokens, priority=priority,
        reason="welcome credit", source=source,
        expires_at=at(expires_at) if expires_at else None,
    )  # fmt: skip
    return await meter.stub.Grant(request)


async def parts(meter: RunningMeter, account: str) -> list[tuple[int, int, int, int]]:
    """(grant_id, source, remaining, held) of each part of the balance, in the order drawn."""
    answer = await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))
    return [(g.grant_id, g.source, g.remaining, g.held) for g in answer.grants]


async def grant_entries(engine: AsyncEngine, account: str, grant_id: int) -> list[tuple[str, int]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT kind, amount FROM ledger_entries WHERE account_id = :a AND pool = :p ORDER BY entry_id"),
            {"a": account, "p": f"grant:{grant_id}"},
        )
        return [(row.kind, row.amount) for row in rows]


async def test_grants_are_drawn_by_priority_then_soonest_expiry_then_oldest(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    account = await funded_account(meter.stub, 1_000)  # the purchased pool: never expires
    now = await server_now(meter, engine)
    later = await grant(meter, account, 300, expires_at=now + timedelta(days=30))
    sooner = await grant(meter, account, 200, expires_at=now + timedelta(days=10))
    last = await grant(meter, account, 100, priority=5)
    newer = await grant(meter, account, 150, source=pb.GRANT_SOURCE_ADJUSTMENT)  # after purchased: newer
    ids = [g.grant.grant_id for g in (later, sooner, last, newer)]
    assert (later.grant.tokens, later.grant.remaining, later.created) == (300, 300, True)
    final = await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))
    assert (final.balance.granted_remaining, final.balance.purchased_remaining, final.balance.available) == (
        750,
        1_000,
        1_750,
    )
    assert [g[0] for g in await parts(meter, account)] == [ids[1], ids[0], 0, ids[3], ids[2]]
    assert final.next_expiry.grant_id == ids[1]

    # 250 tokens: the sooner grant's 200, then 50 of the later one.
    hold = await meter.stub.Reserve(reserve_request(account, input_tokens=125, max_output_tokens=125))
    assert await parts(meter, account) == [
        (ids[1], pb.GRANT_SOURCE_PROMOTION, 0, 200),
        (ids[0], pb.GRANT_SOURCE_PROMOTION, 250, 50),
        (0, pb.GRANT_SOURCE_PURCHASE, 1_000, 0),
        (ids[3], pb.GRANT_SOURCE_ADJUSTMENT, 150, 0),
        (ids[2], pb.GRANT_SOURCE_PROMOTION, 100, 0),
    ]
    # It used 220: the sooner grant's 200 and 20 of the later one's part; 30 go back there.
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=120, output_tokens=100))
    assert [p[2:] for p in await parts(meter, account)] == [(280, 0), (1_000, 0), (150, 0), (100, 0)]
    # Usage beyond a hold follows the same order: 50 held, 600 used.
    big = await meter.stub.Reserve(reserve_request(account, input_tokens=25, max_output_tokens=25))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=big.reservation_id, input_tokens=300, output_tokens=300))
    assert [p[2:] for p in await parts(meter, account)] == [(680, 0), (150, 0), (100, 0)]  # the later grant emptied
    assert await grant_entries(engine, account, ids[0]) == [("grant", 300), ("usage", -20), ("usage", -280)]
    entries = await meter.stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(account_id=account, page_size=50))
    named = {(e.kind, e.pool, e.grant_id, e.amount) for e in entries.entries if e.pool == pb.POOL_GRANT}
    assert (pb.ENTRY_KIND_USAGE, pb.POOL_GRANT, ids[1], -200) in named
    assert (pb.ENTRY_KIND_GRANT, pb.POOL_GRANT, ids[2], 100) in named


async def test_an_expired_grant_leaves_once_and_an_open_hold_keeps_what_it_took(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    """By a call: the first call after the expiry ends it (its remainder an expiry entry); a hold
    that drew on it keeps what it took, charges what it used, and what it gives back expires."""
    account = await funded_account(meter.stub, 1_000)
    now = await server_now(meter, engine)
    expiring = (await grant(meter, account, 500, expires_at=now + timedelta(minutes=10))).grant.grant_id
    hold = await meter.stub.Reserve(
        reserve_request(account, input_tokens=150, max_output_tokens=150, ttl_seconds=3_600)
    )
    meter.clock.advance(timedelta(minutes=20))
    after = await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))
    assert (after.balance.granted_remaining, after.balance.held, after.balance.purchased_remaining) == (0, 300, 1_000)
    assert not after.HasField("next_expiry")
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=100, output_tokens=0))
    assert await grant_entries(engine, account, expiring) == [
        ("grant", 500),
        ("expiry", -200),  # what it had left at its expiry
        ("usage", -100),  # what the hold used
        ("expiry", -200),  # what the hold gave back after the expiry
    ]
    done = await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))
    assert (done.balance.granted_remaining, done.balance.held, done.balance.purchased_remaining) == (0, 0, 1_000)
    told = [e["payload"] for e in await balance_events(engine, account) if e["type"] == "grant.expired"]
    assert [(p["grant_id"], p["tokens"]) for p in told] == [(expiring, 200)]
    # Nothing expires twice: the sweeper finds nothing left to do.
    await sweep_once(meter.service.meter)
    assert len(await grant_entries(engine, account, expiring)) == 4


async def test_the_sweeper_expires_a_grant_no_call_touches(meter: RunningMeter, engine: AsyncEngine) -> None:
    account = await funded_account(meter.stub, 0)
    now = await server_now(meter, engine)
    expiring = (await grant(meter, account, 700, expires_at=now + timedelta(minutes=5))).grant.grant_id
    meter.clock.advance(timedelta(minutes=6))
    await sweep_once(meter.service.meter)
    assert await grant_entries(engine, account, expiring) == [("grant", 700), ("expiry", -700)]
    async with engine.connect() as connection:
        due = await connection.scalar(
            text("SELECT next_grant_expiry FROM accounts WHERE account_id = :a"), {"a": account}
        )
    assert due is None
    await expect_error(
        meter.stub.Reserve(reserve_request(account)), grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_TOKENS"
    )


async def test_a_revoked_grant_goes_and_what_was_spent_stays_spent(meter: RunningMeter, engine: AsyncEngine) -> None:
    account = await funded_account(meter.stub, 0)
    revoked = (await grant(meter, account, 400)).grant.grant_id
    hold = await meter.stub.Reserve(reserve_request(account))  # 100 held from it
    spent = await meter.stub.Reserve(reserve_request(account))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=spent.reservation_id, input_tokens=40, output_tokens=0))
    answer = await meter.stub.RevokeGrant(pb.RevokeGrantRequest(account_id=account, grant_id=revoked))
    assert (answer.revoked, answer.revoked_tokens, answer.balance.granted_remaining) == (True, 260, 0)
    await meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id))
    assert await grant_entries(engine, account, revoked) == [
        ("grant", 400),
        ("usage", -40),
        ("revocation", -260),
        ("expiry", -100),  # what the open hold gave back after the revocation
    ]
    again = await meter.stub.RevokeGrant(pb.RevokeGrantRequest(account_id=account, grant_id=revoked))
    assert (again.revoked, again.revoked_tokens) == (False, 0)
    info = await expect_error(
        meter.stub.RevokeGrant(pb.RevokeGrantRequest(account_id=account, grant_id=revoked + 1_000)),
        grpc.StatusCode.NOT_FOUND,
        "GRANT_NOT_FOUND",
    )
    assert info.metadata["grantId"] == str(revoked + 1_000)
    told = [e["type"] for e in await balance_events(engine, account) if e["type"].startswith("grant.")]
    assert told == ["grant.created", "grant.revoked"]


async def test_a_grant_is_granted_once_by_its_request_id_and_every_field_is_bounded(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    account = await funded_account(meter.stub, 0)
    await meter.stub.ChargeUsage(  # 30 tokens used that nothing paid for: debt
        pb.ChargeUsageRequest(account_id=account, request_id=new_id("u"), model="basic", input_tokens=30)
    )
    first = await grant(meter, account, 500, request_id="welcome-1")
    again = await grant(meter, account, 500, request_id="welcome-1")
    assert (first.created, again.created, again.grant.grant_id) == (True, False, first.grant.grant_id)
    assert (again.balance.granted_remaining, again.balance.debt) == (470, 0)  # the debt paid first
    assert await grant_entries(engine, account, first.grant.grant_id) == [("grant", 500), ("debt_payment", -30)]
    info = await expect_error(
        grant(meter, account, 600, request_id="welcome-1"), grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED"
    )
    assert info.metadata["field"] == "tokens"
    now = await server_now(meter, engine)
    for bad, field in (
        (pb.GrantRequest(account_id=account, request_id="x", tokens=0, reason="r"), "tokens"),
        (pb.GrantRequest(account_id=account, request_id="x", tokens=10**12, reason="r"), "tokens"),
        (pb.GrantRequest(account_id=account, request_id="x", tokens=1, reason=""), "reason"),
        (pb.GrantRequest(account_id=account, request_id="x", tokens=1, reason="r", priority=-1), "priority"),
        (
            pb.GrantRequest(account_id=account, request_id="x", tokens=1, reason="r", source=pb.GRANT_SOURCE_PURCHASE),
            "source",
        ),
        (
            pb.GrantRequest(account_id=account, request_id="x", tokens=1, reason="r", expires_at=at(now)),
            "expires_at",
        ),
        (pb.GrantRequest(account_id=account, tokens=1, reason="r"), "request_id"),
    ):
        info = await expect_error(meter.stub.Grant(bad), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
        assert info.metadata["field"] == field
    await expect_error(
        meter.stub.Grant(pb.GrantRequest(account_id=new_id(), request_id="x", tokens=1, reason="r")),
        grpc.StatusCode.NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    )


async def test_k_of_200_concurrent_reserves_fit_and_each_grant_is_drawn_after_the_ones_before(
    meters: StartMeter, engine: AsyncEngine
) -> None:
    """16 rows, three grants of different priority (3 200 tokens each: 200 a row), 200 concurrent
    Reserves of 100: exactly 96 fit; then, on a fresh account, 40 of them draw the first grant
    whole and 800 of the second, and leave the third untouched."""
    meter: RunningMeter = await meters(buckets=16)

    async def account_with_grants() -> tuple[str, list[int]]:
        account = await funded_account(meter.stub, 0)
        granted = [(await grant(meter, account, 3_200, priority=p)).grant.grant_id for p in (2, 0, 1)]
        return account, [granted[1], granted[2], granted[0]]  # in the order they are drawn

    async def reserve(account: str) -> bool:
        try:
            await meter.stub.Reserve(reserve_request(account))
            return True
        except grpc.aio.AioRpcError as refused:
            assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
            return False

    full, _ = await account_with_grants()
    placed = await asyncio.gather(*(reserve(full) for _ in range(200)))
    assert sum(placed) == 96
    assert [p[2:] for p in await parts(meter, full)] == [(0, 3_200)] * 3

    partial, order = await account_with_grants()
    assert sum(await asyncio.gather(*(reserve(partial) for _ in range(40)))) == 40
    assert await parts(meter, partial) == [
        (order[0], pb.GRANT_SOURCE_PROMOTION, 0, 3_200),
        (order[1], pb.GRANT_SOURCE_PROMOTION, 2_400, 800),
        (order[2], pb.GRANT_SOURCE_PROMOTION, 3_200, 0),
    ]


async def test_meter_account_show_prints_the_grants(meter: RunningMeter, engine: AsyncEngine) -> None:
    account = await funded_account(meter.stub, 1_000)
    now = await server_now(meter, engine)
    expiring = (await grant(meter, account, 2_500, expires_at=now + timedelta(days=30))).grant
    code, out, err = await run_cli("account", "show", account, "--target", meter.address)
    assert code == 0, err
    lines = out.splitlines()
    start = lines.index("grants (in the order drawn)")
    assert lines[start + 1].split() == ["GRANT", "SOURCE", "PRIORITY", "REMAINING", "HELD", "EXPIRES", "REASON"]
    assert lines[start + 2].split()[:6] == [str(expiring.grant_id), "promotion", "0", "2,500", "0",
                                            f"{expiring.expires_at.ToDatetime():%Y-%m-%d}"]  # fmt: skip
    assert lines[start + 3].split() == ["-", "purchase", "0", "1,000", "0", "never"]


async def test_a_grant_about_to_expire_with_tokens_left_is_told_once(meters: StartMeter, engine: AsyncEngine) -> None:
    """balance.expiring, METER_EXPIRING_NOTICE_HOURS before a grant's expiry, once per grant; one
    that will end with nothing left is not told."""
    meter: RunningMeter = await meters(expiring_notice_hours=24, sweep_interval_seconds=3600)
    account = await funded_account(meter.stub, 0)
    now = await server_now(meter, engine)
    kept = (await grant(meter, account, 900, expires_at=now + timedelta(hours=30))).grant.grant_id
    await grant(meter, account, 100, expires_at=now + timedelta(hours=29))  # sooner: drawn first, then empty
    await grant(meter, account, 500, expires_at=now + timedelta(days=10))  # not within the notice
    for _ in range(2):
        hold = await meter.stub.Reserve(reserve_request(account, input_tokens=25, max_output_tokens=25))
        await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=50, output_tokens=0))
    meter.clock.advance(timedelta(hours=7))
    await sweep_once(meter.service.meter)
    await sweep_once(meter.service.meter)
    told = [e["payload"] for e in await balance_events(engine, account) if e["type"] == "balance.expiring"]
    assert [(p["grant_id"], p["tokens"], p["source"]) for p in told] == [(kept, 900, "promotion")]


def expiring_pack_catalog() -> Any:
    """The suite's catalog with a pack whose tokens expire 30 days after they are credited."""
    catalog = suite_catalog()
    pack = Pack("pack_30d", tokens=1_000, price_minor=100, currency="usd", active=True, expires_after_days=30)
    return replace(catalog, packs={**catalog.packs, pack.id: pack})


async def buy(meter: RunningMeter, account: str, pack_id: str, tokens: int, ref: str) -> pb.CreditPurchaseResponse:
    return await meter.stub.CreditPurchase(
        pb.CreditPurchaseRequest(
            account_id=account, pack_id=pack_id, tokens=tokens, amount_minor=100, currency="usd", payment_ref=ref,
            payment_intent=f"pi_{ref}",
        )
    )  # fmt: skip


async def test_a_pack_that_expires_is_a_grant_of_its_own_and_a_refund_takes_back_from_it(
    meters: StartMeter, engine: AsyncEngine
) -> None:
    """Its tokens are a grant of source purchase expiring 30 days after the credit, drawn before the
    purchased pool (sooner expiry); a refund takes back from that grant; once it expired, a refund
    takes what expired back from nothing (no debt for tokens nobody spent)."""
    meter: RunningMeter = await meters(catalog=expiring_pack_catalog())
    account = await funded_account(meter.stub, 500)  # purchased tokens that never expire
    now = await server_now(meter, engine)
    await buy(meter, account, "pack_30d", 1_000, "cs_30d_1")
    [pack, purchased] = (await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))).grants
    assert (pack.source, pack.remaining, pack.reason, purchased.source) == (
        pb.GRANT_SOURCE_PURCHASE, 1_000, "pack_30d", pb.GRANT_SOURCE_PURCHASE,
    )  # fmt: skip
    expires = pack.expires_at.ToDatetime(UTC)
    assert timedelta(days=30) <= expires - now < timedelta(days=30, minutes=1)
    catalog = await meter.stub.GetCatalog(pb.GetCatalogRequest())
    assert {p.id: p.expires_after_days for p in catalog.packs}["pack_30d"] == 30
    hold = await meter.stub.Reserve(reserve_request(account, input_tokens=100, max_output_tokens=100))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=150, output_tokens=0))
    assert await grant_entries(engine, account, pack.grant_id) == [("purchase", 1_000), ("usage", -150)]

    refunded = await meter.stub.ReverseCredit(
        pb.ReverseCreditRequest(payment_intent="pi_cs_30d_1", kind=pb.REVERSAL_KIND_REFUND, amount_minor=50)
    )
    assert (refunded.reversed_tokens, refunded.balance.purchased_remaining) == (500, 500)  # from its grant
    assert await grant_entries(engine, account, pack.grant_id) == [
        ("purchase", 1_000), ("usage", -150), ("refund", -500),
    ]  # fmt: skip

    meter.clock.advance(timedelta(days=31))
    await sweep_once(meter.service.meter)
    assert (await grant_entries(engine, account, pack.grant_id))[-1] == ("expiry", -350)
    refunded = await meter.stub.ReverseCredit(
        pb.ReverseCreditRequest(payment_intent="pi_cs_30d_1", kind=pb.REVERSAL_KIND_REFUND, amount_minor=100)
    )
    # The other half: 350 of it had expired (taken back from nothing); 150 were spent: debt.
    assert (refunded.reversed_tokens, refunded.unbilled_tokens, refunded.balance.debt) == (500, 150, 150)


async def test_a_won_dispute_gives_an_expiring_pack_back_to_its_grant(meters: StartMeter, engine: AsyncEngine) -> None:
    meter: RunningMeter = await meters(catalog=expiring_pack_catalog())
    account = await funded_account(meter.stub, 0)
    await buy(meter, account, "pack_30d", 1_000, "cs_30d_2")
    grant_id = (await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))).grants[0].grant_id
    frozen = await meter.stub.ReverseCredit(
        pb.ReverseCreditRequest(payment_intent="pi_cs_30d_2", kind=pb.REVERSAL_KIND_DISPUTE)
    )
    assert (frozen.balance.granted_remaining, frozen.balance.purchased_remaining) == (0, 0)
    won = await meter.stub.ReverseCredit(
        pb.ReverseCreditRequest(payment_intent="pi_cs_30d_2", kind=pb.REVERSAL_KIND_DISPUTE_WON)
    )
    assert [(g.grant_id, g.remaining) for g in (await meter.stub.GetBalance(
        pb.GetBalanceRequest(account_id=account))).grants] == [(grant_id, 1_000)]  # fmt: skip
    assert won.reversed_tokens == -1_000


async def test_a_plan_rolls_its_unused_allowance_over_up_to_its_cap(meters: StartMeter, engine: AsyncEngine) -> None:
    """A plan whose unused allowance rolls over (at most 600 tokens, living 45 days): of a month's
    1 000, 300 used, 600 of the 700 left become a rollover grant at the month's end (the other 100
    expire), drawn after the new month's allowance, which expires sooner."""
    catalog = suite_catalog()
    saver = Plan("saver", monthly_allowance_tokens=1_000, per_account=False, rollover=Rollover(600, 45))
    meter: RunningMeter = await meters(catalog=replace(catalog, plans={**catalog.plans, saver.id: saver}))
    account = new_id()
    opened = await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="saver"))
    month_end = opened.balance.period_end.ToDatetime(UTC)
    hold = await meter.stub.Reserve(reserve_request(account, input_tokens=150, max_output_tokens=150))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=150, output_tokens=150))
    meter.clock.advance(month_end - await server_now(meter, engine) + timedelta(minutes=1))
    after = await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))
    assert (after.balance.allowance_remaining, after.balance.granted_remaining) == (1_000, 600)
    [allowance, rolled] = after.grants
    assert (allowance.source, rolled.source, rolled.remaining) == (
        pb.GRANT_SOURCE_ALLOWANCE, pb.GRANT_SOURCE_ROLLOVER, 600,
    )  # fmt: skip
    assert rolled.expires_at.ToDatetime(UTC) == month_end + timedelta(days=45)
    entries = [e for e in await ledger(engine, account) if e["kind"] in ("expiry", "grant")]
    assert [(e["kind"], e["pool"], e["amount"]) for e in entries] == [
        ("expiry", "allowance", -700),
        ("grant", f"grant:{rolled.grant_id}", 600),
    ]
    told = [e["payload"] for e in await balance_events(engine, account) if e["type"] == "grant.created"]
    assert [(p["source"], p["tokens"]) for p in told] == [("rollover", 600)]
