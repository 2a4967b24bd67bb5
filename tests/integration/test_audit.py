"""`meter audit` passes on a consistent database and names the account of a corrupted bucket."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from test_stripe_edges import meter_now, spend
from test_yearly_subscription import PRO, Year

from meter.storage.audit import audit
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance_events, funded_account, ledger, planted, reserve_request


def _meter_audit(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "METER_DATABASE_URL": database_url, "METER_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "meter.cli", "audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_audit_passes_then_fails_on_a_hand_corrupted_bucket(
    meter: RunningMeter, engine: AsyncEngine, database_url: str
) -> None:
    account = await funded_account(meter.stub, 1000)
    hold = await meter.stub.Reserve(reserve_request(account))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=10, output_tokens=5))

    clean = _meter_audit(database_url)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "clean" in clean.stdout

    corrupt = text(
        "UPDATE buckets SET available = available + :delta WHERE account_id = :a AND pool = 'purchased' AND bucket = 3"
    )
    async with engine.begin() as connection:
        await connection.execute(corrupt, {"delta": 7, "a": account})
    try:
        broken = _meter_audit(database_url)
        assert broken.returncode == 1
        assert f"MISMATCH {account} purchased: available + held is 992 but the ledger sums to 985" in broken.stdout
        assert _meter_audit(database_url, "--account", account).returncode == 1
    finally:
        async with engine.begin() as connection:
            await connection.execute(corrupt, {"delta": -7, "a": account})
    assert _meter_audit(database_url, "--account", account).returncode == 0


async def test_audit_finds_daily_usage_that_differs_from_the_calls(meter: RunningMeter, engine: AsyncEngine) -> None:
    account = await funded_account(meter.stub, 1000)
    hold = await meter.stub.Reserve(reserve_request(account))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=10, output_tokens=5))
    assert (await audit(engine, account)).clean

    corrupt = text(
        "UPDATE usage_daily SET cost_micros = cost_micros + :delta, requests = requests + :delta WHERE account_id = :a"
    )
    async with engine.begin() as connection:
        await connection.execute(corrupt, {"delta": 2, "a": account})
    try:
        problems = [str(d) for d in (await audit(engine, account)).discrepancies]
        assert len(problems) == 1
        assert problems[0].startswith(f"{account} usage of basic on ")
        assert problems[0].endswith(
            "the calls sum to 1 requests, 10 in, 0 cached in, 0 cache writes, 5 out, 0 reasoning, 15 charged, "
            "0 micro-USD, 0 unbilled but the daily totals to 3 requests, 10 in, 0 cached in, 0 cache writes, 5 out, "
            "0 reasoning, 15 charged, 2 micro-USD, 0 unbilled"
        )
    finally:
        async with engine.begin() as connection:
            await connection.execute(corrupt, {"delta": -2, "a": account})
    assert (await audit(engine, account)).clean


async def test_audit_finds_a_budget_that_differs_from_its_calls(meter: RunningMeter, engine: AsyncEngine) -> None:
    account = await funded_account(meter.stub, 1000)
    await meter.stub.SetBudget(
        pb.SetBudgetRequest(account_id=account, label_key="team", label_value="a", unit=pb.BUDGET_UNIT_TOKENS, cap=500)
    )
    hold = await meter.stub.Reserve(reserve_request(account, labels={"team": "a"}))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=10, output_tokens=5))
    await meter.stub.Reserve(reserve_request(account, labels={"team": "a"}))
    assert (await audit(engine, account)).clean

    corrupt = text("UPDATE budget_buckets SET used = used + :delta WHERE account_id = :a AND used > 0")
    async with engine.begin() as connection:
        await connection.execute(corrupt, {"delta": 7, "a": account})
    try:
        problems = [str(d) for d in (await audit(engine, account)).discrepancies]
        assert problems == [
            f"{account} budget of team=a: its rows hold 100, use 22 and have 385 available of 500 but its calls "
            "hold 100 and used 15"
        ]
    finally:
        async with engine.begin() as connection:
            await connection.execute(corrupt, {"delta": -7, "a": account})
    assert (await audit(engine, account)).clean


async def test_ledger_is_append_only(meter: RunningMeter, engine: AsyncEngine) -> None:
    import pytest
    from sqlalchemy.exc import DBAPIError

    account = await funded_account(meter.stub, 10)
    async with engine.begin() as connection:
        with pytest.raises(DBAPIError, match="append-only"):
            await connection.execute(text("UPDATE ledger_entries SET amount = 1 WHERE account_id = :a"), {"a": account})


async def test_audit_holds_events_to_the_ledger_and_to_their_numbering(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    account = await funded_account(meter.stub, 1000)  # SetPlan free (no grant), then Adjust +1000: one event
    ref = "cs_audit_events"
    await meter.stub.CreditPurchase(
        pb.CreditPurchaseRequest(
            account_id=account,
            pack_id="pack_1000_tokens",
            tokens=1000,
            amount_minor=100,
            currency="usd",
            payment_ref=ref,
        )
    )
    assert (await audit(engine, account)).clean

    async def corrupted(sql: str, undo: str) -> list[str]:
        async with engine.begin() as connection:
            await connection.execute(text(sql), {"a": account})
        try:
            return [str(d) for d in (await audit(engine, account)).discrepancies]
        finally:
            async with engine.begin() as connection:
                await connection.execute(text(undo), {"a": account})

    def shifted(field: str, by: int) -> str:
        return f"jsonb_set(payload, '{{{field}}}', to_jsonb(CAST(payload ->> '{field}' AS bigint) + {by}))"

    purchase = "WHERE account_id = :a AND type = 'purchase.credited'"
    assert await corrupted(
        f"UPDATE balance_events SET payload = {shifted('tokens', 1)} {purchase}",
        f"UPDATE balance_events SET payload = {shifted('tokens', -1)} {purchase}",
    ) == [f"{account} event 3 tells of 1001 tokens bought with {ref} but the ledger has no such purchase"]
    adjusted = "WHERE account_id = :a AND type = 'balance.adjusted'"
    [funding] = [e["payload"]["request_id"] for e in await balance_events(engine, account) if e["sequence"] == 2]
    assert await corrupted(
        f"UPDATE balance_events SET payload = {shifted('delta', 5)} {adjusted}",
        f"UPDATE balance_events SET payload = {shifted('delta', -5)} {adjusted}",
    ) == [f"{account} event 2 tells of an adjustment of 1005 but the ledger's entries of {funding} sum to 1000"]
    assert await corrupted(
        "UPDATE balance_events SET sequence = sequence + 10 WHERE account_id = :a AND sequence = 3",
        "UPDATE balance_events SET sequence = sequence - 10 WHERE account_id = :a AND sequence = 13",
    ) == [f"{account} its 3 events are numbered up to 13 and its counter is at 3"]
    assert (await audit(engine, account)).clean


async def test_audit_finds_an_allowance_month_granted_or_expired_twice(
    meter: RunningMeter, engine: AsyncEngine, database_url: str
) -> None:
    """A yearly subscriber's months begin one by one, each granted once and what it left expired
    once, both entries named after the month: clean. A second grant or expiry of a month, though
    the buckets agree with the ledger, is named with its month."""
    year = Year(meter, await meter_now(meter, engine))
    await year.begin(await meter_now(meter, engine))
    await spend(meter, year.account, 1_000)
    meter.clock.advance(timedelta(seconds=year.months[1].timestamp() - 120 - await meter_now(meter, engine)))
    holds = [await meter.stub.Reserve(reserve_request(year.account, max_output_tokens=100)) for _ in range(2)]
    await year.into_month(engine, 1)  # three minutes later: the holds are open still
    for hold in holds:  # settled after their month ended: what they give back expires, unnamed
        await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=10, output_tokens=5))
    await year.into_month(engine, 2)
    entries = await ledger(engine, year.account)
    months = [e["ref"] for e in entries if e["kind"] == "subscription_grant"]
    expired = [(e["ref"], e["amount"]) for e in entries if e["kind"] == "expiry"]
    left = PRO - 1_000 - sum(hold.held_tokens for hold in holds)
    back = [(None, 15 - hold.held_tokens) for hold in holds]
    assert len(set(months)) == 3 and expired == [(months[1], -left), *back, (months[2], -PRO)]
    clean = _meter_audit(database_url, "--account", year.account)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    month, earlier = months[2].removeprefix("period:"), months[1].removeprefix("period:")
    async with planted(engine, year.account, "subscription_grant", "allowance", PRO, months[2]):
        broken = _meter_audit(database_url, "--account", year.account)
        assert broken.returncode == 1
        assert f"MISMATCH {year.account} allowance month {month} is granted 2 times ({PRO}, {PRO} tokens)" in (
            broken.stdout.splitlines()
        )
    async with planted(engine, year.account, "expiry", "allowance", -1_000, months[1]):
        assert [str(d) for d in (await audit(engine, year.account)).discrepancies] == [
            f"{year.account} allowance month {earlier} is expired 2 times ({left}, 1000 tokens)"
        ]
    assert (await audit(engine, year.account)).clean
