"""Warning levels at their exact thresholds, and each level announced (log line and metric) once
per period however many requests see it, by whichever replica sees it first."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY

from meter import logs
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, funded_account, new_id, reserve_request

LEVELS = ("80", "90", "95", "exhausted")


def _counted() -> dict[str, float]:
    return {
        level: REGISTRY.get_sample_value("meter_balance_warnings_total", {"level": level}) or 0.0 for level in LEVELS
    }


def _announced(caplog: pytest.LogCaptureFixture, account: str) -> list[str]:
    """The levels announced for `account`, in order, from the log lines."""
    found = []
    for record in caplog.records:
        if record.name == "meter.warnings" and record.args and record.args[0] == account:  # type: ignore[index]
            found.append(str(record.args[1]).removesuffix(" %"))  # type: ignore[index]
    return found


async def _use(meter: RunningMeter, account: str, tokens: int) -> pb.Balance:
    """Charge exactly `tokens` on the basic model (weights 1)."""
    hold = await meter.stub.Reserve(reserve_request(account, input_tokens=0, max_output_tokens=tokens))
    done = await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, output_tokens=tokens))
    return done.balance


async def test_levels_at_exact_thresholds_each_announced_once(
    meter: RunningMeter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="meter.warnings")
    counted = _counted()
    account = await funded_account(meter.stub, 1000)
    # used / (used + held + remaining) with 1000 tokens: 80 % at 800 used, 90 % at 900, 95 % at 950.
    steps = [
        (799, pb.WARNING_LEVEL_NONE),
        (1, pb.WARNING_LEVEL_PERCENT_80),
        (99, pb.WARNING_LEVEL_PERCENT_80),
        (1, pb.WARNING_LEVEL_PERCENT_90),
        (49, pb.WARNING_LEVEL_PERCENT_90),
        (1, pb.WARNING_LEVEL_PERCENT_95),
        (49, pb.WARNING_LEVEL_PERCENT_95),
        (1, pb.WARNING_LEVEL_EXHAUSTED),
    ]
    used = 0
    for tokens, level in steps:
        balance = await _use(meter, account, tokens)
        used += tokens
        assert (balance.used_this_period, balance.warning_level) == (used, level)
        got = (await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))).balance
        assert got.warning_level == level
    assert _announced(caplog, account) == ["80", "90", "95", "exhausted"]

    # A purchase lowers the level; crossing 80 % again in the same period is not announced again.
    await meter.stub.Adjust(
        pb.AdjustRequest(account_id=account, pool=pb.POOL_PURCHASED, delta=1000, reason="top-up", request_id=new_id())
    )
    assert (await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))).balance.warning_level == (
        pb.WARNING_LEVEL_NONE  # 1000 of 2000
    )
    balance = await _use(meter, account, 600)
    assert balance.warning_level == pb.WARNING_LEVEL_PERCENT_80
    assert _announced(caplog, account) == ["80", "90", "95", "exhausted"]
    assert {level: _counted()[level] - counted[level] for level in LEVELS} == dict.fromkeys(LEVELS, 1)
    async with aiohttp.ClientSession() as http, http.get(f"http://{meter.service.webhooks.address}/metrics") as answer:
        assert answer.status == 200
        scraped = await answer.text()
    assert f'meter_balance_warnings_total{{level="80"}} {_counted()["80"]}' in scraped


async def test_a_jump_announces_every_level_crossed_and_a_new_period_starts_over(
    meter: RunningMeter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="meter.warnings")
    account = await funded_account(meter.stub, 1000)
    assert (await _use(meter, account, 920)).warning_level == pb.WARNING_LEVEL_PERCENT_90
    assert _announced(caplog, account) == ["80", "90"]

    # A hold can exhaust the account: it is announced at the Reserve that takes the last token.
    hold = await meter.stub.Reserve(reserve_request(account, input_tokens=0, max_output_tokens=80))
    assert hold.balance.warning_level == pb.WARNING_LEVEL_EXHAUSTED
    assert _announced(caplog, account) == ["80", "90", "exhausted"]
    await meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id))

    meter.clock.advance(timedelta(days=32))  # the free plan's calendar month ends: used starts over
    balance = (await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))).balance
    assert (balance.used_this_period, balance.warning_level) == (0, pb.WARNING_LEVEL_NONE)
    assert (await _use(meter, account, 64)).warning_level == pb.WARNING_LEVEL_PERCENT_80  # 64 of 80
    assert _announced(caplog, account) == ["80", "90", "exhausted", "80"]


async def test_replicas_racing_over_a_threshold_announce_it_once(meters, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="meter.warnings")
    replicas = [await meters(), await meters()]
    account = await funded_account(replicas[0].stub, 10_000)
    await _use(replicas[0], account, 7_900)

    async def burst(replica: RunningMeter) -> None:
        for _ in range(5):
            await _use(replica, account, 30)

    await asyncio.gather(*(burst(r) for r in replicas for _ in range(4)))  # 8 000 + 1 200 used: past 90 %
    assert _announced(caplog, account) == ["80", "90"]


async def test_the_warning_line_the_docs_show_is_what_meter_logs(
    meter: RunningMeter, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/design.md shows the line for a starter account (50 000 a month) with 10 000 purchased
    that used 48 000: 80 %, as logged (without its time; the period's start is this month's)."""
    design = (Path(__file__).parents[2] / "docs" / "design.md").read_text()
    shown = next(line for line in design.splitlines() if line.startswith("WARNING meter.warnings: "))
    caplog.set_level(logging.WARNING, logger="meter.warnings")
    account = await funded_account(meter.stub, 10_000, plan="starter")
    balance = await _use(meter, account, 48_000)
    assert balance.warning_level == pb.WARNING_LEVEL_PERCENT_80
    formatter = logging.Formatter(logs.TEXT_FORMAT.removeprefix("%(asctime)s "))
    logged = [formatter.format(r) for r in caplog.records if r.name == "meter.warnings"]
    month = re.compile(r"\d{4}-\d\d-01T00:00:00\+00:00")
    assert [month.sub("<month>", line.replace(account, "acme")) for line in logged] == [month.sub("<month>", shown)]
