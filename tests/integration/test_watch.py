"""`meter watch`: a live terminal view of balance events, each with the balance after it, for one
account or all; Ctrl-C says how to resume, and resuming shows no event twice; --json is one
object per line for a pipe."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import StartMeter

from meter.v1 import meter_pb2 as pb
from meterlab.testbed import free_port
from support import RunningMeter, new_id

WATCHERS: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
def no_watcher_left() -> Iterator[None]:
    """A test that fails half-way leaves no `meter watch` running."""
    yield
    while WATCHERS:
        process = WATCHERS.pop()
        if process.returncode is None:
            process.kill()


async def watch(meter: RunningMeter, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "METER_GRPC_ADDR": meter.address, "METER_LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meter.cli", "watch", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    WATCHERS.append(process)
    return process


async def lines(process: asyncio.subprocess.Process, count: int, within: float = 30) -> list[str]:
    assert process.stdout is not None
    read: list[str] = []
    deadline = time.monotonic() + within
    while len(read) < count:
        line = await asyncio.wait_for(process.stdout.readline(), max(0.1, deadline - time.monotonic()))
        assert line, f"meter watch ended after {read}"
        read.append(line.decode().rstrip("\n"))
    return read


async def interrupt(process: asyncio.subprocess.Process) -> str:
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err
    return err.decode()


async def adjust(meter: RunningMeter, account: str, delta: int, request_id: str = "") -> None:
    request = pb.AdjustRequest(
        account_id=account, pool=pb.POOL_PURCHASED, delta=delta, reason="bonus", request_id=request_id or new_id()
    )
    await meter.stub.Adjust(request)


async def test_an_account_watched_live_then_resumed_where_it_stopped(meters: StartMeter) -> None:
    meter = await meters()
    account = new_id()
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
    watcher = await watch(meter, account)
    first = await lines(watcher, 2)  # what happened before it started: the plan and its grant
    assert sorted(line.split("  ")[1:4] for line in first) == [
        [account, "#1", "allowance.granted"],
        [account, "#2", "plan.changed"],
    ]
    await adjust(meter, account, 1_500, "bonus-1")  # while it watches
    (live,) = await lines(watcher, 1)
    assert f"  {account}  #3  balance.adjusted  " in live
    assert "delta=1,500" in live and "-> available 51,500 (allowance 50,000, purchased 1,500, held 0, debt 0)" in live
    assert re.sub(r"^\S+ \S+", "2026-11-29 07:42:03", live.replace(account, "acme")) == docs_line()
    said = await interrupt(watcher)
    assert "meter watch: stopped; resume with --after 3" in said

    await adjust(meter, account, -500)  # while nothing watches
    resumed = await watch(meter, account, "--after", "3", "--json")
    (missed,) = await lines(resumed, 1)
    await interrupt(resumed)
    event = json.loads(missed)
    assert (event["account_id"], event["sequence"], event["type"]) == (account, "4", "balance.adjusted")
    assert event["data"]["delta"] == -500 and event["balance"]["available"] == "51000"


async def test_every_account_watched_together(meters: StartMeter) -> None:
    meter = await meters()
    accounts = [new_id(), new_id()]
    watcher = await watch(meter, "--json")
    for account in accounts:
        await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while not set(accounts) <= seen:
        assert time.monotonic() < deadline, seen
        (line,) = await lines(watcher, 1)
        seen.add(json.loads(line)["account_id"])
    said = await interrupt(watcher)
    assert "meter watch: stopped; resume with --after-position " in said


def docs_line() -> str:
    """The line docs/integrate.md shows `meter watch acme` printing."""
    guide = (Path(__file__).resolve().parents[2] / "docs" / "integrate.md").read_text()
    return guide.split("prints each as it commits, with the\nbalance after it:\n\n```\n", 1)[1].split("\n", 1)[0]


async def test_a_watch_with_nothing_to_watch_says_it_waits_and_for_what() -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "METER_LOG_LEVEL": "WARNING"}
    watcher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meter.cli", "watch", "acme", "--target", address, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    WATCHERS.append(watcher)
    assert watcher.stderr is not None
    said = (await asyncio.wait_for(watcher.stderr.readline(), 30)).decode()
    assert f"meter watch: nothing answers at {address} yet; waiting (is meter running?" in said
    assert "" == await interrupt(watcher)  # nothing watched: nothing to resume from
