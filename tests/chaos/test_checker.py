"""The checker is not vacuous: a double credit that `meter audit` cannot see (buckets and ledger
agree), an acknowledged operation that never landed and a Reserve admitted beyond any possible
balance are all reported."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter import catalog as catalog_file
from meter.v1 import meter_pb2 as pb
from meterlab.chaos import billing, checker
from meterlab.chaos.history import History
from meterlab.chaos.workload import Settings, Workload
from support import WEBHOOK_SECRET, RunningMeter, database_now, planted

StartMeter = Any


@pytest.fixture
async def meter(meters: StartMeter) -> RunningMeter:
    """A server selling what the chaos servers sell (their catalog: packs of both kinds)."""
    return await meters(catalog=catalog_file.load(billing.CATALOG_PATH))


async def _short_run(
    meter: RunningMeter, then: Callable[[Workload], Awaitable[None]] | None = None
) -> tuple[History, Workload]:
    history = History()
    workload = Workload(
        history, [meter.address], meter.webhook_url, WEBHOOK_SECRET, Settings(hot_accounts=1, cold_accounts=2), seed=3
    )
    await workload.fund()
    await workload.client(lambda: len(history.ops) >= 150)
    if then is not None:
        await then(workload)
    await workload.close()
    assert not workload.bugs
    return history, workload


async def test_a_real_run_is_clean(meter: RunningMeter, engine: AsyncEngine) -> None:
    history, workload = await _short_run(meter)
    findings = await checker.check(engine, history, workload.accounts)
    assert findings.violations == []
    assert findings.checks > 150


async def test_a_double_credit_the_audit_cannot_see_is_found(meter: RunningMeter, engine: AsyncEngine) -> None:
    history, workload = await _short_run(meter)
    bought = next(op for op in history.of("purchase") if op.acked)
    async with engine.begin() as connection:
        # The same payment credited again, with the bucket moved to match: the audit stays clean.
        await connection.execute(
            text(
                "INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, ref) "
                "VALUES (:a, now(), 'test', 'purchase', 'purchased', 1000, :ref)"
            ),
            {"a": bought.account, "ref": bought.key},
        )
        await connection.execute(
            text(
                "UPDATE buckets SET available = available + 1000 "
                "WHERE account_id = :a AND pool = 'purchased' AND bucket = 0"
            ),
            {"a": bought.account},
        )
    lost = history.begin("adjust", bought.account, "adj-never-applied", delta=100)
    history.ack(lost, available=0)
    greedy = history.begin(
        "reserve", bought.account, "req-greedy", reuse=False, input_tokens=10**9, max_output_tokens=0, ttl_seconds=600
    )
    history.ack(greedy, reservation_id=f"{bought.account}/{'0' * 32}", held=10**9)

    findings = await checker.check(engine, history, workload.accounts)

    found = {(v.check, v.account) for v in findings.violations}
    assert ("credited twice", bought.account) in found
    assert ("ledger = model", bought.account) in found
    assert any(v.check == "adjust" and "adj-never-applied" in v.detail for v in findings.violations)
    assert ("admission", bought.account) in found
    assert not any(v.check == "audit" for v in findings.violations)


async def test_a_refilled_allowance_and_a_frozen_won_dispute_are_found(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    """The Stripe flows' checks are not vacuous either: a subscriber's month refilled by a second
    upgrade grant (what a proration invoice used to do) and tokens left frozen by a won dispute are
    reported, though balances, ledger and events agree (`meter audit` finds nothing: it sees a
    month granted twice only where both grants name the month)."""

    async def subscribe_and_win_a_dispute(workload: Workload) -> None:
        await billing.subscribe(workload)
        while not any(op.args.get("status") == "won" and op.acked for op in workload.history.of("dispute")):
            await billing.dispute(workload)

    history, workload = await _short_run(meter, subscribe_and_win_a_dispute)
    assert (await checker.check(engine, history, workload.accounts)).violations == []
    subscriber = workload.subscribers[-1]
    won = next(op for op in history.of("dispute") if op.args["status"] == "won" and op.acked)
    async with engine.begin() as connection:
        month = await connection.scalar(
            text(
                "SELECT ref FROM ledger_entries WHERE account_id = :a AND kind = 'subscription_grant' "
                "AND ref LIKE 'period:%' LIMIT 1"
            ),
            {"a": subscriber},
        )
        refill = "upgrade:business:" + str(month).removeprefix("period:")
        for account, kind, pool, amount, ref, told in (
            (subscriber, "subscription_grant", "allowance", 500_000, refill, "allowance.granted"),
            (won.account, "dispute_freeze", "purchased", -1000, won.args["dispute"], "credit.reversed"),
        ):
            await connection.execute(
                text(
                    "INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, ref) "
                    "VALUES (:a, now(), 'test', :kind, :pool, :amount, :ref)"
                ),
                {"a": account, "kind": kind, "pool": pool, "amount": amount, "ref": ref},
            )
            await connection.execute(
                text(  # on the row with the most: open holds may have taken much of one
                    "UPDATE buckets SET available = available + :amount WHERE account_id = :a AND pool = :pool "
                    "AND bucket = (SELECT b.bucket FROM buckets AS b WHERE b.account_id = :a AND b.pool = :pool "
                    "ORDER BY b.available DESC LIMIT 1)"
                ),
                {"a": account, "pool": pool, "amount": amount},
            )
            await connection.execute(
                text("SELECT meter_emit(:a, :type, jsonb_build_object('tokens', CAST(:tokens AS bigint)), now())"),
                {"a": account, "type": told, "tokens": abs(amount)},
            )

    findings = await checker.check(engine, history, workload.accounts)

    found = {(v.check, v.account) for v in findings.violations}
    assert ("allowance", subscriber) in found
    assert ("dispute", won.account) in found
    assert not any(v.check == "audit" for v in findings.violations)


async def test_a_yearly_month_granted_twice_or_past_the_paid_year_is_found(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    """A yearly subscriber crossing into its second month is clean; a second grant of one of its
    months, or a grant of the month after its paid year, is reported (`meter audit` sees the
    first as well: both grants name the month)."""
    history, workload = await _short_run(meter, billing.subscribe_yearly)
    subscriber = workload.subscribers[-1]
    year = next(op.args for op in history.of("subscription") if op.account == subscriber)
    async with engine.connect() as connection:
        second = await connection.scalar(
            text("SELECT period_end FROM accounts WHERE account_id = :a"), {"a": subscriber}
        )
    now = await database_now(engine) + meter.clock.offset
    meter.clock.advance(second - now + timedelta(minutes=1))
    await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=subscriber))
    assert (await checker.check(engine, history, workload.accounts)).violations == []
    async with engine.connect() as connection:
        months = (
            await connection.scalars(
                text(
                    "SELECT ref FROM ledger_entries WHERE account_id = :a AND kind = 'subscription_grant' "
                    "ORDER BY entry_id"
                ),
                {"a": subscriber},
            )
        ).all()
    assert len(months) in (1, 2)  # the second month is granted unless a refund withheld all of it

    after = "period:" + datetime.fromtimestamp(year["end"], UTC).isoformat()
    for ref, problem, audit in (
        (months[-1], "months granted more than once", "is granted 2 times"),
        (after, "outside the paid year", None),
    ):
        async with planted(engine, subscriber, "subscription_grant", "allowance", billing.PERIOD_TOKENS, ref):
            findings = await checker.check(engine, history, workload.accounts)
        assert any(v.check == "yearly" and v.account == subscriber and problem in v.detail for v in findings.violations)
        assert audit is None or any(v.check == "audit" and audit in v.detail for v in findings.violations)
    assert (await checker.check(engine, history, workload.accounts)).violations == []
