"""Webhooks out: each balance event an endpoint wants reaches it, signed per Standard Webhooks
(verified here with the `standardwebhooks` library, as a receiver would), at least once, in order
per account, across endpoint failures, a SIGKILL of meter mid-delivery and two replicas at once;
a delivery whose retry schedule is spent is dead, listed, and sent again on redeliver. A receiver
that misbehaves (a huge error body, no answer at all, redirects, 410 Gone) costs meter a bounded
read and holds back no other endpoint; an endpoint's URL is parsed, and its password never shown."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from webhook_receiver import Receiver

from meter import outbound_webhooks
from meter.domain.errors import InvalidField
from meter.domain.webhook_deliveries import DeliveryState
from meter.service import webhook_endpoints
from meter.v1 import meter_pb2 as pb
from meterlab.chaos.hostile_receivers import Redirector, Tarpit
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
    # A host that is not public is the operator's choice, said aloud: in the answer and the log.
    warning = "127.0.0.1 is a loopback address, not a public one: events go inside this network"
    assert fields["warning"].strip() == warning and f"{name}: {warning}" in err
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
    real HTTP route: a purchase, a refused payment credited after all, and a 90 % warning become
    one message each."""
    docs = (Path(__file__).parents[2] / "docs" / "integrate.md").read_text()
    [source] = [b for b in re.findall(r"```python\n(.*?)```", docs, re.S) if "def on_meter_event(" in b]
    handled: set[str] = set()
    told: list[tuple[str, str]] = []
    meter = await meters(**FAST)
    namespace: dict[str, Any] = {
        "already_handled": handled.__contains__,
        "mark_handled": handled.add,
        "send_mail": lambda account, message: told.append((account, message)),
        "queue_refund": lambda account, ref, why: told.append((account, f"refund {ref}: {why}")),
        "cancel_refund": lambda account, ref: told.append((account, f"no refund {ref}")),
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
        await meter.stub.CreditPurchase(pack_purchase(account, payment_ref=refused_ref))  # as sold after all
        hold = await meter.stub.Reserve(reserve_request(account, input_tokens=1000, max_output_tokens=850))
        await meter.stub.Commit(
            pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=1000, output_tokens=850)
        )
        expected = await event_ids(engine, account)
        await until(lambda: handled >= set(expected))
        assert told == [
            (account, "You bought 1,000 tokens"),
            (account, f"refund {refused_ref}: tokens is 5, the catalog says 1000"),
            (account, "You bought 1,000 tokens"),
            (account, f"no refund {refused_ref}"),
            (account, "You have used 90 % of your tokens this period"),
        ]
        count = await webhook_endpoints.redeliver(meter.service.meter, name=name, account_id=account)
        assert count == len(expected)
        async with engine.connect() as connection:

            async def pending() -> int:
                query = "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = :e AND status <> 'delivered'"
                return int((await connection.execute(text(query), {"e": name})).scalar_one())

            await eventually(pending, lambda left: left == 0)
        assert len(told) == 5  # redelivered, recognised by webhook-id: nothing told twice
    finally:
        await runner.cleanup()


# -- Receivers that misbehave (issue 34) ----------------------------------------------------------


async def deliveries(meter: RunningMeter, name: str) -> list[DeliveryState]:
    return await webhook_endpoints.list_deliveries(meter.service.meter, name=name, status=None, account_id=None)


async def endpoints_listed(database_url: str) -> str:
    code, out, err = await run_cli("endpoints", "list", env={"METER_DATABASE_URL": database_url})
    assert code == 0, err
    return out


async def add_url(meter: RunningMeter, url: str, types: tuple[str, ...] = ()) -> str:
    added = await webhook_endpoints.add_endpoint(meter.service.meter, name=new_id("ep"), url=url, types=list(types))
    return added.endpoint.endpoint_id


async def test_an_error_body_is_read_a_few_hundred_bytes_deep_then_the_connection_dropped(
    meters: Any, receiver: Receiver, database_url: str
) -> None:
    """A 500 with a 64 MB body: the attempt's error keeps the status and the body's first bytes,
    and meter hangs up on the rest, so the receiver's writes fail long before its body is out."""
    body_size, said = 64 * 2**20, b"database on fire " * 4096
    written: list[int] = []
    write_failed: list[str] = []

    async def huge_error(request: web.Request) -> web.StreamResponse:
        await request.read()
        answer = web.StreamResponse(status=500, headers={"Content-Length": str(body_size)})
        await answer.prepare(request)
        sent = 0
        try:
            while sent < body_size:
                await answer.write(said)
                sent += len(said)
        except ConnectionError as error:
            write_failed.append(type(error).__name__)
        finally:
            written.append(sent)
        return answer

    app = web.Application()
    app.router.add_post("/hook", huge_error)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        meter = await meters(**(FAST | {"delivery_retry_seconds": ()}))  # one attempt, then dead
        name = await add_url(meter, f"http://127.0.0.1:{runner.addresses[0][1]}/hook", ("balance.adjusted",))
        await funded_account(meter.stub, 100)
        await until(lambda: bool(written))
        [dead] = await eventually(lambda: deliveries(meter, name), lambda found: found[0].status.value == "dead")
    finally:
        await runner.cleanup()
    assert write_failed and written[0] < body_size // 8, (write_failed, written)
    assert dead.last_error is not None and dead.last_error.startswith("HTTP 500: database on fire database")
    assert len(dead.last_error) <= len("HTTP 500: ") + outbound_webhooks.ERROR_BODY_BYTES


async def test_an_endpoint_that_never_answers_holds_back_no_other_endpoint(
    meters: Any, receiver: Receiver, engine: AsyncEngine, database_url: str
) -> None:
    """A tarpit beside a healthy endpoint: the healthy one gets every event, in order per
    account, while the tarpit's first sends are still open, and the tarpit holds no more than
    its endpoint's places; its other deliveries wait, queued behind them."""
    tarpit = await Tarpit().start()
    try:
        meter = await meters(**(FAST | {"delivery_timeout_seconds": 60.0, "delivery_endpoint_concurrency": 2}))
        await add_endpoint(meter, receiver)
        stuck = await add_url(meter, tarpit.url)
        accounts = [await funded_account(meter.stub, 100 + i) for i in range(4)]
        for account in accounts:
            await meter.stub.CreditPurchase(pack_purchase(account, payment_ref=new_id("cs")))
        expected = {account: await event_ids(engine, account) for account in accounts}
        total = sum(map(len, expected.values()))
        await until(lambda: len(receiver.delivered()) == total)
        await until(lambda: tarpit.accepted == 2)
        assert (tarpit.accepted, tarpit.closed) == (2, 0)  # its two places, still waiting for an answer
        for account, ids in expected.items():
            assert [r.webhook_id for r in receiver.delivered() if r.webhook_id in ids] == ids, account
        waiting = await deliveries(meter, stuck)
        assert len(waiting) == total and {d.status.value for d in waiting} == {"pending"}
        assert sorted(d.attempts for d in waiting) == [0] * (total - 2) + [1, 1]
        assert sum(d.next_attempt_at is None for d in waiting) == total - len(accounts)  # queued behind
    finally:
        await tarpit.stop()


async def test_an_endpoint_that_times_out_is_backed_off_until_it_answers(
    meters: Any, receiver: Receiver, engine: AsyncEngine, database_url: str
) -> None:
    meter = await meters(**(FAST | {"delivery_timeout_seconds": 0.5, "delivery_endpoint_concurrency": 1}))
    name = await add_endpoint(meter, receiver)
    receiver.hang = asyncio.Event()
    account = await funded_account(meter.stub, 100)
    ids = await event_ids(engine, account)
    listed = await eventually(lambda: endpoints_listed(database_url), lambda out: "backing-off" in out)
    assert re.search(rf"^{name} {receiver.url} backing-off types=all timeouts=\d+ until=\S+Z$", listed, re.M)
    receiver.hang.set()
    receiver.hang = None
    await until(lambda: [r.webhook_id for r in receiver.delivered()][-len(ids) :] == ids)
    listed = await eventually(lambda: endpoints_listed(database_url), lambda out: f"{name} " in out)
    assert f"{name} {receiver.url} active types=all\n" in listed  # an answer in time ends the backoff


async def test_a_redirect_is_a_failed_attempt_showing_where_it_pointed_and_never_followed(
    meters: Any, receiver: Receiver, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    redirector = await Redirector().start()
    try:
        meter = await meters(**(FAST | {"delivery_retry_seconds": (0.05,)}))  # two attempts, then dead
        names = {
            status: await add_url(meter, redirector.url(status), ("balance.adjusted",))
            for status in (301, 302, 307, 308)
        }
        with caplog.at_level(logging.WARNING, logger="meter.service.deliverer"):
            await funded_account(meter.stub, 100)
            for status, name in names.items():
                [dead] = await eventually(
                    partial(deliveries, meter, name), lambda found: found[0].status.value == "dead"
                )
                assert dead.last_error == f"HTTP {status}: redirect to {redirector.target_url} not followed"
                assert dead.attempts == 2 and dead.delivered_at is None
        assert (redirector.redirected, redirector.target_hits) == (8, 0)
        logged = [r.getMessage() for r in caplog.records if "redirect to" in r.getMessage()]
        assert len(logged) == 8 and all(redirector.target_url in line for line in logged)
        code, out, err = await run_cli(
            "deliveries", "list", "--status", "dead", env={"METER_DATABASE_URL": database_url}
        )
        assert code == 0, err
        assert out.count(f"last error: HTTP 302: redirect to {redirector.target_url} not followed") == 1
    finally:
        await redirector.stop()


async def test_410_gone_disables_the_endpoint_keeping_its_deliveries_until_resumed(
    meters: Any, receiver: Receiver, engine: AsyncEngine, database_url: str
) -> None:
    meter = await meters(**FAST)
    name = await add_endpoint(meter, receiver)
    receiver.fail_next, receiver.failing_status = 1, 410
    other = await Receiver().start()
    try:
        await add_endpoint(meter, other)
        account = await funded_account(meter.stub, 100)
        first = await event_ids(engine, account)
        await until(lambda: len(other.delivered()) == len(first))
        listed = await eventually(lambda: endpoints_listed(database_url), lambda out: "disabled" in out)
        assert re.search(
            rf"^{name} {receiver.url} disabled types=all since=\S+Z \(answered 410 Gone to event {first[0]}\)$",
            listed,
            re.M,
        )
        # Sent nothing more: the other endpoint gets a later event, this one is not sent it.
        await meter.stub.Adjust(
            pb.AdjustRequest(
                account_id=account, pool=pb.POOL_PURCHASED, delta=5, reason="later", request_id=new_id("a")
            )
        )
        ids = await event_ids(engine, account)
        await until(lambda: len(other.delivered()) == len(ids))
        assert [r.answered for r in receiver.received] == [410]
        assert {d.status.value for d in await deliveries(meter, name)} == {"pending"}
        code, out, err = await run_cli("endpoints", "resume", name, env={"METER_DATABASE_URL": database_url})
        assert (code, out.strip()) == (0, f"meter: endpoint {name} resumed"), err
        await until(lambda: len(receiver.delivered()) == len(ids))
        assert [r.webhook_id for r in receiver.delivered()] == ids  # what waited, in order
    finally:
        await other.stop()


async def test_endpoint_urls_and_names_are_parsed_and_a_password_never_shown(
    meters: Any, receiver: Receiver, engine: AsyncEngine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    meter = await meters(**(FAST | {"delivery_retry_seconds": ()}))
    for url in ("http://", "http:///x", "ftp://example.com/x", "http://example.com:99999/x", "http://a b/",
                "http://user:s3cret@example.com/x", "http://127.0.0.1/x\n"):  # fmt: skip
        with pytest.raises(InvalidField) as refused:
            await add_url(meter, url)
        assert refused.value.field == "url" and "s3cret" not in str(refused.value), url
    env = {"METER_DATABASE_URL": database_url}
    code, out, err = await run_cli("endpoints", "add", "hooks\n", receiver.url, env=env)
    assert code == 2 and "endpoint_id" in err and not out, (out, err)
    # Endpoints stored before credentials were refused: sent as a header, shown as ***.
    port = receiver.url.split(":")[2].split("/")[0]
    legacy = {new_id("ep"): f"http://user:s3cret@127.0.0.1:{port}/meter-events", new_id("ep"): "http://user:s3cret@/x"}
    async with engine.begin() as connection:
        for name, url in legacy.items():
            await connection.execute(
                text("INSERT INTO webhook_endpoints (endpoint_id, url, secret, created_at) VALUES (:e, :u, :s, now())"),
                {"e": name, "u": url, "s": "whsec_" + base64.b64encode(b"k" * 24).decode()},
            )
    receiver.secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    sent, broken = legacy
    with caplog.at_level(logging.WARNING, logger="meter.service.deliverer"):
        await funded_account(meter.stub, 100)
        await until(lambda: len(receiver.delivered()) == 2)
        [failed, _] = await eventually(lambda: deliveries(meter, broken), lambda found: found[0].status.value == "dead")
    assert {r.authorization for r in receiver.delivered()} == {"Basic " + base64.b64encode(b"user:s3cret").decode()}
    assert failed.last_error is not None and failed.last_error.startswith("ValueError: Invalid URL: host is required")
    listed = await endpoints_listed(database_url)
    assert f"{sent} http://***@127.0.0.1:{port}/meter-events active" in listed and f"{broken} http://***@/x " in listed
    code, out, err = await run_cli("deliveries", "list", env=env)
    assert code == 0 and "s3cret" not in out + listed + caplog.text and broken in caplog.text, err
