"""Webhooks out: each balance event an endpoint wants reaches it, signed per Standard Webhooks
(verified here with the `standardwebhooks` library, as a receiver would), at least once, in order
per account, across endpoint failures, a SIGKILL of meter mid-delivery and two replicas at once;
a delivery whose retry schedule is spent is dead, listed, and sent again on redeliver."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from webhook_receiver import Receiver

from meter.service import webhook_endpoints
from meter.v1 import meter_pb2 as pb
from support import (
    RunningMeter,
    balance_events,
    eventually,
    funded_account,
    new_id,
    pack_purchase,
    reserve_request,
    run_cli,
)

FAST = {"delivery_poll_seconds": 0.05, "delivery_retry_seconds": (0.05,) * 8, "delivery_timeout_seconds": 2.0}


@pytest.fixture
async def receiver(engine: AsyncEngine) -> AsyncIterator[Receiver]:
    """A receiver; afterwards every endpoint is removed, so no later test's events go anywhere."""
    started = await Receiver().start()
    yield started
    if started.hang is not None:
        started.hang.set()
    await started.stop()
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM webhook_deliveries"))
        await connection.execute(text("DELETE FROM webhook_endpoints"))


async def add_endpoint(meter: RunningMeter, receiver: Receiver, types: tuple[str, ...] = ()) -> str:
    name = new_id("ep")
    added = await webhook_endpoints.add_endpoint(meter.service.meter, name=name, url=receiver.url, types=list(types))
    receiver.secret = added.secret
    return name


async def event_ids(engine: AsyncEngine, account: str, type: str | None = None) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT event_id FROM balance_events WHERE account_id = :a "
                "AND (CAST(:t AS text) IS NULL OR type = :t) ORDER BY sequence"
            ),
            {"a": account, "t": type},
        )
        return [str(row.event_id) for row in rows]


async def until(probe: Callable[[], bool], within: float = 30.0) -> None:
    async def check() -> bool:
        return probe()

    await eventually(check, bool, within=within)


async def test_an_endpoint_added_from_the_cli_gets_the_types_it_wants_signed_in_order(
    meters: Any, receiver: Receiver, engine: AsyncEngine, database_url: str
) -> None:
    meter = await meters(**FAST)
    name = new_id("ep")
    code, out, err = await run_cli(
        "endpoints", "add", name, receiver.url, "--types", "purchase.credited,plan.changed",
        env={"METER_DATABASE_URL": database_url},
    )  # fmt: skip
    assert code == 0, err
    fields = dict(line.split(":", 1) for line in out.splitlines())
    receiver.secret = fields["secret"].strip()
    assert receiver.secret.startswith("whsec_") and fields["types"].strip() == "plan.changed, purchase.credited"
    account = new_id()
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))  # granted + changed
    await meter.stub.CreditPurchase(pack_purchase(account, payment_ref=new_id("cs")))
    await until(lambda: len(receiver.delivered()) == 2)
    events = await balance_events(engine, account)
    assert [e["type"] for e in events] == ["allowance.granted", "plan.changed", "purchase.credited"]
    ids = await event_ids(engine, account)
    got = receiver.delivered()
    assert [r.webhook_id for r in got] == [ids[1], ids[2]]  # the wanted ones, in order, webhook-id = event_id
    changed, bought = (r.body for r in got)
    assert changed["type"] == "plan.changed" and changed["data"]["sequence"] == "2"
    assert bought["data"] | {"balance": None, "occurred_at": None, "position": None} == {
        "event_id": ids[2],
        "account_id": account,
        "sequence": "3",
        "type": "purchase.credited",
        "occurred_at": None,
        "data": {
            "payment_ref": events[2]["payload"]["payment_ref"],
            "pack_id": "pack_1000_tokens",
            "tokens": 1000,
            "amount_minor": 100,
            "currency": "usd",
        },
        "balance": None,
        "position": None,
    }
    assert bought["data"]["balance"]["purchased_remaining"] == "1000"
    assert bought["timestamp"] == bought["data"]["occurred_at"]
    assert receiver.forged == 0
    code, out, err = await run_cli(
        "deliveries", "list", "--endpoint", name, "--json", env={"METER_DATABASE_URL": database_url}
    )
    assert code == 0, err
    assert [line.split('"status": "')[1].split('"')[0] for line in out.splitlines()] == ["delivered", "delivered"]


async def test_an_endpoint_failing_for_a_while_gets_every_event_once_in_order_per_account(
    meters: Any, receiver: Receiver, engine: AsyncEngine
) -> None:
    meter = await meters(**FAST)
    await add_endpoint(meter, receiver)
    receiver.fail_next = 5
    accounts = [await funded_account(meter.stub, 5000) for _ in range(3)]
    for account in accounts:
        await meter.stub.CreditPurchase(pack_purchase(account, payment_ref=new_id("cs")))
    expected = {account: await event_ids(engine, account) for account in accounts}
    total = sum(map(len, expected.values()))
    await until(lambda: len(receiver.delivered()) == total)
    delivered = [r.webhook_id for r in receiver.delivered()]
    assert sorted(delivered) == sorted(i for ids in expected.values() for i in ids)  # each once
    assert sum(r.answered == 500 for r in receiver.received) == 5  # redelivered under the same ids
    for account, ids in expected.items():
        # Every attempt, failed or not, in the account's order: nothing overtakes an earlier event.
        attempts = [ids.index(r.webhook_id) for r in receiver.received if r.webhook_id in ids]
        assert attempts == sorted(attempts), account
    # A range sent again: the same webhook-ids, so the receiver can tell it has them.
    count = await webhook_endpoints.redeliver(
        meter.service.meter, name=(await webhook_endpoints.list_endpoints(meter.service.meter))[-1].endpoint_id,
        account_id=accounts[0], first=1, last=2,
    )  # fmt: skip
    assert count == 2
    await until(lambda: len(receiver.delivered()) == total + 2)
    assert [r.webhook_id for r in receiver.delivered()[-2:]] == expected[accounts[0]][:2]


async def test_a_spent_schedule_leaves_a_dead_delivery_that_redeliver_sends(
    meters: Any, receiver: Receiver, engine: AsyncEngine, database_url: str
) -> None:
    meter = await meters(**(FAST | {"delivery_retry_seconds": (0.05,)}))  # two attempts in all
    name = await add_endpoint(meter, receiver, types=("balance.adjusted",))
    receiver.fail_next = 2
    account = await funded_account(meter.stub, 700)
    [dead_id] = await event_ids(engine, account, "balance.adjusted")
    env = {"METER_DATABASE_URL": database_url}

    async def dead() -> str:
        return (await run_cli("deliveries", "list", "--endpoint", name, "--status", "dead", env=env))[1]

    listed = await eventually(dead, lambda out: dead_id in out)
    assert "attempts=2" in listed and "HTTP 500" in listed
    # A dead delivery does not hold the account's later events back.
    await meter.stub.Adjust(
        pb.AdjustRequest(account_id=account, pool=pb.POOL_PURCHASED, delta=5, reason="later", request_id=new_id("a"))
    )
    await until(lambda: len(receiver.delivered()) == 1)
    code, out, err = await run_cli("deliveries", "redeliver", name, "--dead", env=env)
    assert (code, out.strip()) == (0, f"meter: 1 deliveries to {name} pending again"), err
    await until(lambda: len(receiver.delivered()) == 2)
    assert receiver.delivered()[-1].webhook_id == dead_id
    # Paused: nothing is sent, and what happens meanwhile waits for it.
    await webhook_endpoints.pause_endpoint(meter.service.meter, name=name, paused=True)
    await meter.stub.Adjust(
        pb.AdjustRequest(account_id=account, pool=pb.POOL_PURCHASED, delta=6, reason="waits", request_id=new_id("a"))
    )
    pending = await webhook_endpoints.list_deliveries(meter.service.meter, name=name, status=None, account_id=account)
    assert [d.status.value for d in pending].count("pending") == 1
    await webhook_endpoints.pause_endpoint(meter.service.meter, name=name, paused=False)
    await until(lambda: len(receiver.delivered()) == 3)


async def test_two_replicas_never_send_one_delivery_at_the_same_time(
    meters: Any, receiver: Receiver, engine: AsyncEngine
) -> None:
    first, second = await meters(**FAST), await meters(**FAST)
    await add_endpoint(first, receiver)
    accounts = [await funded_account((first if i % 2 else second).stub, 100 + i) for i in range(12)]
    expected = [i for account in accounts for i in await event_ids(engine, account)]
    await until(lambda: len(receiver.delivered()) >= len(expected))
    assert sorted(r.webhook_id for r in receiver.received) == sorted(expected)  # once each, no overlap
    assert receiver.overlapping == []


async def test_a_meter_killed_mid_delivery_leaves_it_to_another_under_the_same_webhook_id(
    meters: Any, receiver: Receiver, engine: AsyncEngine, database_url: str
) -> None:
    # This replica makes the events but looks for deliveries only once a minute: the killed one sends.
    maker = await meters(**(FAST | {"delivery_poll_seconds": 60.0}))
    await add_endpoint(maker, receiver)
    receiver.hang = asyncio.Event()
    account = await funded_account(maker.stub, 300)
    ids = await event_ids(engine, account)
    env = {
        **os.environ,
        "METER_DATABASE_URL": database_url,
        "METER_GRPC_ADDR": f"127.0.0.1:{free_port()}",
        "METER_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "METER_CONNECT_ADDR": "off",
        "METER_DELIVERY_POLL_SECONDS": "0.05",
        "METER_DELIVERY_TIMEOUT_SECONDS": "1",
        "METER_LOG_LEVEL": "WARNING",
    }
    killed = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meter.cli", "serve", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await asyncio.wait_for(receiver.arrived.wait(), timeout=60)  # the first event is being sent
    finally:
        killed.send_signal(signal.SIGKILL)
        await killed.wait()
    receiver.hang.set()  # the killed sender's request is answered into the void
    receiver.hang = None
    await meters(**FAST)  # another replica: once the lease runs out, it sends the delivery again
    await until(lambda: {r.webhook_id for r in receiver.delivered()} == set(ids))
    sent = [r.webhook_id for r in receiver.received]
    assert sent.count(ids[0]) == 2 and sorted(set(sent)) == sorted(ids)  # the one redelivery, same id
    assert all(sent.count(i) == 1 for i in ids[1:])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_docs_python_receiver_tells_each_fact_once(
    meters: Any, receiver: Receiver, engine: AsyncEngine
) -> None:
    """docs/integrate.md's `on_meter_event` (its webhooks out section, run as written) behind a
    real HTTP route: a refused payment, a purchase and a 90 % warning become one message each."""
    docs = (Path(__file__).parents[2] / "docs" / "integrate.md").read_text()
    [source] = [b for b in re.findall(r"```python\n(.*?)```", docs, re.S) if "def on_meter_event(" in b]
    handled: set[str] = set()
    told: list[tuple[str, str]] = []
    meter = await meters(**FAST)
    namespace: dict[str, Any] = {
        "already_handled": handled.__contains__,
        "mark_handled": handled.add,
        "send_mail": lambda account, message: told.append((account, message)),
        "refund_and_apologise": lambda account, ref, why: told.append((account, f"refund {ref}: {why}")),
    }

    async def route(request: web.Request) -> web.Response:
        return web.Response(status=namespace["on_meter_event"](await request.read(), dict(request.headers)))

    app = web.Application()
    app.router.add_post("/hook", route)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        name, url = new_id("ep"), f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        added = await webhook_endpoints.add_endpoint(meter.service.meter, name=name, url=url, types=[])
        namespace["METER_WEBHOOK_SECRET"] = added.secret
        exec(source, namespace)  # noqa: S102 (the docs' own example)
        account = new_id()
        refused_ref, bought_ref = new_id("cs"), new_id("cs")
        await meter.stub.CreditPurchase(pack_purchase(account, payment_ref=bought_ref))
        with contextlib.suppress(grpc.aio.AioRpcError):
            await meter.stub.CreditPurchase(pack_purchase(account, payment_ref=refused_ref, tokens=5))
        hold = await meter.stub.Reserve(reserve_request(account, input_tokens=500, max_output_tokens=450))
        await meter.stub.Commit(
            pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=500, output_tokens=450)
        )
        expected = await event_ids(engine, account)
        await until(lambda: handled >= set(expected))
        assert told == [
            (account, "You bought 1,000 tokens"),
            (account, f"refund {refused_ref}: tokens is 5, the catalog says 1000"),
            (account, "You have used 90 % of your tokens this period"),
        ]
        count = await webhook_endpoints.redeliver(meter.service.meter, name=name, account_id=account)
        assert count == len(expected)
        async with engine.connect() as connection:

            async def pending() -> int:
                query = "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = :e AND status <> 'delivered'"
                return int((await connection.execute(text(query), {"e": name})).scalar_one())

            await eventually(pending, lambda left: left == 0)
        assert len(told) == 3  # redelivered, recognised by webhook-id: nothing told twice
    finally:
        await runner.cleanup()
