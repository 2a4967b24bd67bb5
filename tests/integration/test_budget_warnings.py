"""Budgets tell too: the first time in its period a budget's calls use 80, 90 or 95 % of its cap,
a budget.warning event (each level once), and when it has nothing left to admit, a
budget.exhausted event (once), whichever of many concurrent Commits crossed it; a new period tells
them again. The levels are the balance warnings'."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance_events, funded_account, reserve_request

SEARCH = {"team": "search"}


async def call(meter: RunningMeter, account: str, tokens: int) -> None:
    """A call on the `basic` model (weights 1) that holds and uses `tokens`, labelled team=search."""
    held = await meter.stub.Reserve(
        reserve_request(account, labels=SEARCH, input_tokens=tokens // 2, max_output_tokens=tokens - tokens // 2)
    )
    await meter.stub.Commit(
        pb.CommitRequest(
            reservation_id=held.reservation_id, input_tokens=tokens // 2, output_tokens=tokens - tokens // 2
        )
    )


def told(events: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [
        (e["type"], e["payload"]["level"], e["payload"]["used"])
        for e in events
        if e["type"] in ("budget.warning", "budget.exhausted")
    ]


async def test_each_level_is_told_once_per_period(meter: RunningMeter, engine: AsyncEngine) -> None:
    account = await funded_account(meter.stub, 1_000_000)
    await meter.stub.SetBudget(
        pb.SetBudgetRequest(
            account_id=account, label_key="team", label_value="search", unit=pb.BUDGET_UNIT_TOKENS, cap=1_000
        )
    )
    await call(meter, account, 700)  # 70 %: nothing
    assert told(await balance_events(engine, account)) == []
    await call(meter, account, 120)  # 82 %
    await call(meter, account, 20)  # 84 %: 80 told already
    await call(meter, account, 130)  # 97 %: 90 and 95 at once
    await call(meter, account, 30)  # 100 %: nothing left to admit
    events = await balance_events(engine, account)
    assert told(events) == [
        ("budget.warning", "80", 820),
        ("budget.warning", "90", 970),
        ("budget.warning", "95", 970),
        ("budget.exhausted", "exhausted", 1_000),
    ]
    payload = next(e["payload"] for e in events if e["type"] == "budget.exhausted")
    assert {key: payload[key] for key in ("label_key", "label_value", "unit", "cap", "held")} == {
        "label_key": "team",
        "label_value": "search",
        "unit": "tokens",
        "cap": 1_000,
        "held": 0,
    }

    meter.clock.advance(timedelta(days=32))  # a new period: the budget starts again, and so do its levels
    await call(meter, account, 850)
    assert told(await balance_events(engine, account))[-1] == ("budget.warning", "80", 850)


async def test_concurrent_commits_tell_a_level_once(meter: RunningMeter, engine: AsyncEngine) -> None:
    account = await funded_account(meter.stub, 1_000_000)
    await meter.stub.SetBudget(
        pb.SetBudgetRequest(
            account_id=account, label_key="team", label_value="search", unit=pb.BUDGET_UNIT_TOKENS, cap=10_000
        )
    )
    await asyncio.gather(*(call(meter, account, 100) for _ in range(90)))  # 90 %, crossed by some of them
    levels = [level for _, level, _ in told(await balance_events(engine, account))]
    assert levels == ["80", "90"]
    async with engine.connect() as connection:
        announced = await connection.scalar(
            text("SELECT warned_levels FROM budgets WHERE account_id = :a"), {"a": account}
        )
    assert announced == 0b11  # 80 and 90, as the account's warnings store them
