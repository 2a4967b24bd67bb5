"""meter.client: the typed async client, against a real server."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.client import MeterClient, MeterRpcError
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, funded_account, ledger, new_id

INTEGRATE = Path(__file__).parents[2] / "docs" / "integrate.md"  # the docs' Python examples, run as written


class ModelCallFailed(Exception):
    pass


class TestHoldContextManager:
    """`async with client.reserve(...) as hold` commits what was reported, releases otherwise."""

    async def test_reported_usage_is_committed(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account = await funded_account(meter.stub, 1000)
        async with MeterClient(meter.address) as client:
            async with client.reserve(account_id=account, model="basic", input_tokens=50, max_output_tokens=50) as hold:
                assert hold.held_tokens == 100
                assert (await balance(meter.stub, account)).held == 100
                hold.report(input_tokens=40, output_tokens=20)
        assert hold.commit_response is not None
        assert hold.commit_response.charged_tokens == 60
        assert (await balance(meter.stub, account)).purchased_remaining == 940
        assert [(e["kind"], e["amount"]) for e in await ledger(engine, account)][-1] == ("usage", -60)

    async def test_failure_before_any_usage_releases_and_reraises(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 1000)
        async with MeterClient(meter.address) as client:
            with pytest.raises(ModelCallFailed):
                async with client.reserve(account_id=account, model="basic", input_tokens=50, max_output_tokens=50):
                    raise ModelCallFailed()
        snapshot = await balance(meter.stub, account)
        assert (snapshot.held, snapshot.purchased_remaining) == (0, 1000)

    async def test_failure_after_usage_was_reported_still_commits(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 1000)
        async with MeterClient(meter.address) as client:
            with pytest.raises(ModelCallFailed):
                async with client.reserve(
                    account_id=account, model="basic", input_tokens=50, max_output_tokens=50
                ) as hold:
                    hold.report(input_tokens=50, output_tokens=10)
                    raise ModelCallFailed("stream broke after the tokens were produced")
        snapshot = await balance(meter.stub, account)
        assert (snapshot.held, snapshot.purchased_remaining) == (0, 940)

    async def test_a_block_that_reports_nothing_releases(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 1000)
        async with MeterClient(meter.address) as client:
            async with client.reserve(account_id=account, model="basic", input_tokens=5, max_output_tokens=5) as hold:
                pass
        assert hold.commit_response is None
        assert (await balance(meter.stub, account)).purchased_remaining == 1000


class TestCalls:
    async def test_refusals_carry_reason_and_metadata(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 150)
        async with MeterClient(meter.address) as client:
            with pytest.raises(MeterRpcError) as refused:
                await client.reserve(account_id=account, model="basic", input_tokens=100, max_output_tokens=100)
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.reason == "INSUFFICIENT_TOKENS"
        assert refused.value.metadata == {"available": "150", "required": "200"}
        assert (await balance(meter.stub, account)).held == 0

    async def test_the_same_request_id_is_the_same_reservation(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 1000)
        async with MeterClient(meter.address) as client:
            pending = client.reserve(account_id=account, model="basic", input_tokens=10, max_output_tokens=10)
            first = await pending
            again = await client.reserve(
                account_id=account,
                model="basic",
                input_tokens=10,
                max_output_tokens=10,
                request_id=pending.request.request_id,
            )
            assert again.reservation_id == first.reservation_id
            released = await client.release(reservation_id=first.reservation_id)
        assert released.balance.purchased_remaining == 1000

    async def test_balance_catalog_plan_adjust_and_credit(self, meter: RunningMeter) -> None:
        account = new_id()
        async with MeterClient(meter.address) as client:
            catalog = await client.get_catalog()
            assert catalog.version == "2026-11-30.1"
            plan = await client.set_plan(account_id=account, plan_id="starter")
            assert plan.balance.allowance_total == 50_000
            await client.adjust(account_id=account, pool=pb.POOL_PURCHASED, delta=5, reason="r", request_id=new_id())
            credit = await client.credit_purchase(
                account_id=account,
                pack_id="pack_1000_tokens",
                tokens=1000,
                amount_minor=100,
                currency="usd",
                payment_ref=new_id("cs"),
            )
            assert credit.newly_credited
            snapshot = await client.get_balance(account_id=account)
        assert (snapshot.allowance_remaining, snapshot.purchased_remaining) == (50_000, 1005)

    async def test_unreachable_server_is_retried_then_reported_unavailable(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        attempts = 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{closed_port}") as channel:
            client = MeterClient(channel=channel, attempts=3, backoff_seconds=0.001, timeout_seconds=5)
            original = client._stub.Reserve

            def counting(request: pb.ReserveRequest, **kwargs: object) -> object:
                nonlocal attempts
                attempts += 1
                return original(request, **kwargs)

            client._stub.Reserve = counting  # type: ignore[method-assign]
            with pytest.raises(MeterRpcError) as failed:
                await client.reserve(account_id="acme", model="basic", input_tokens=1, max_output_tokens=1)
        assert failed.value.code == grpc.StatusCode.UNAVAILABLE
        assert failed.value.reason == ""
        assert attempts == 3


async def test_the_docs_event_reader_tells_each_fact_once_across_restarts(meter: RunningMeter) -> None:
    """docs/integrate.md's `tell` (from its Events section, run as written): a purchase and a 90 %
    warning become one message each, and reading on from the returned sequence sends nothing again."""
    [source] = [
        block for block in re.findall(r"```python\n(.*?)```", INTEGRATE.read_text(), re.S) if "async def tell(" in block
    ]
    sent: list[tuple[str, str]] = []
    namespace: dict[str, Any] = {"send_mail": lambda account, text: sent.append((account, text))}
    exec(source, namespace)  # noqa: S102 (the docs' own example)
    tell = namespace["tell"]
    account = new_id()
    async with MeterClient(meter.address) as client:
        await client.credit_purchase(
            account_id=account,
            pack_id="pack_1000_tokens",
            tokens=1000,
            amount_minor=100,
            currency="usd",
            payment_ref=new_id("cs"),
        )
        hold = await client.reserve(account_id=account, model="basic", input_tokens=500, max_output_tokens=450)
        await client.commit(reservation_id=hold.reservation_id, input_tokens=500, output_tokens=450)
        after = await tell(client, account, 0)
        assert sent == [
            (account, "You bought 1,000 tokens"),
            (account, "You have used 90 % of your tokens this period"),
        ]
        assert await tell(client, account, after) == after  # nothing new: nothing sent twice
        assert len(sent) == 2


async def test_the_docs_live_balance_follows_every_change_across_a_restart(meters: Any) -> None:
    """docs/integrate.md's `show_live_balance` (run as written): the balance after each change
    reaches the page once, in order, and the stream picks up after meter restarts on the same address."""
    [source] = [
        b for b in re.findall(r"```python\n(.*?)```", INTEGRATE.read_text(), re.S) if "def show_live_balance(" in b
    ]
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 (the docs' own example)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    first = await meters(grpc_addr=address)
    account = await funded_account(first.stub, 100)  # history the page does not replay
    pushed: list[dict[str, int]] = []
    arrived = asyncio.Event()

    def push(update: dict[str, int]) -> None:
        pushed.append(update)
        arrived.set()

    async def next_push() -> dict[str, int]:
        await asyncio.wait_for(arrived.wait(), timeout=30)
        arrived.clear()
        return pushed[-1]

    async with MeterClient(address) as client:
        showing = asyncio.create_task(namespace["show_live_balance"](client, account, push))
        try:
            assert await next_push() == {"available": 100, "used": 0}
            await first.stub.Adjust(adjustment(account, 50))
            assert await next_push() == {"available": 150, "used": 0}
            await first.stop()
            second = await meters(grpc_addr=address)
            await second.stub.Adjust(adjustment(account, 25))
            assert await next_push() == {"available": 175, "used": 0}
            assert len(pushed) == 3  # nothing pushed twice across the restart
        finally:
            showing.cancel()


def adjustment(account: str, delta: int) -> pb.AdjustRequest:
    return pb.AdjustRequest(
        account_id=account, pool=pb.POOL_PURCHASED, delta=delta, reason="live", request_id=new_id("adj")
    )


async def test_a_commit_outlives_a_restart_while_a_reserve_fails_fast(meters: Any) -> None:
    """Commit keeps trying through the settle budget (meter stopped, then back on its address),
    so the model call is charged; a Reserve while meter is away is refused at once (a user waits)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    first = await meters(grpc_addr=address)
    account = await funded_account(first.stub, 1000)
    async with MeterClient(address, settle_budget_seconds=60) as client:
        hold = await client.reserve(account_id=account, model="basic", input_tokens=100, max_output_tokens=100)
        await first.stop()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(MeterRpcError) as refused:
            await client.reserve(account_id=account, model="basic", input_tokens=1, max_output_tokens=1)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        committing = asyncio.create_task(
            client.commit(reservation_id=hold.reservation_id, input_tokens=100, output_tokens=30)
        )
        second = await meters(grpc_addr=address)
        charged = await asyncio.wait_for(committing, timeout=60)
        assert charged.charged_tokens == 130
        assert loop.time() - started < 60  # the budget, not a timing goal
    assert (await balance(second.stub, account)).purchased_remaining == 870


def test_the_service_config_covers_every_method_of_the_contract() -> None:
    """Each RPC has its deadline and retry policy in the shipped service config (and only RPCs
    that exist): a method added without one would be sent without a deadline."""
    from meter.client import SERVICE_CONFIG

    configured = [name["method"] for entry in json.loads(SERVICE_CONFIG)["methodConfig"] for name in entry["name"]]
    methods = pb.DESCRIPTOR.services_by_name["MeterService"].methods_by_name
    assert sorted(configured) == sorted(methods)
    for entry in json.loads(SERVICE_CONFIG)["methodConfig"]:
        streaming = any(methods[name["method"]].server_streaming for name in entry["name"])
        assert ("timeout" in entry) != streaming, entry  # every unary call has a deadline; a stream none


async def test_the_docs_streamed_completion_outlives_its_ttl_and_a_cut_stream_is_charged(
    meters: Any, engine: AsyncEngine
) -> None:
    """docs/integrate.md's `stream_completion` (run as written), with a TTL shorter than the stream:
    the hold is kept alive, the Commit is not late; a stream that breaks is charged what it produced."""
    [source] = [
        b for b in re.findall(r"```python\n(.*?)```", INTEGRATE.read_text(), re.S) if "def stream_completion(" in b
    ]
    namespace: dict[str, Any] = {}
    exec(source.replace("ttl_seconds=60", "ttl_seconds=1").replace("every_seconds=20", "every_seconds=0.2"), namespace)  # noqa: S102
    meter = await meters(sweep_interval_seconds=0.1)
    account = await funded_account(meter.stub, 10_000)
    sent: list[str] = []

    class Chunk:
        def __init__(self, tokens: int) -> None:
            self.tokens, self.text = tokens, "x" * tokens

    async def model_stream(chunks: int, then_fail: bool = False) -> Any:
        for _ in range(chunks):
            await asyncio.sleep(0.25)  # the model's pace: 8 chunks take twice the hold's TTL
            yield Chunk(10)
        if then_fail:
            raise ConnectionError("the model's stream broke")

    async def send(text: str) -> None:
        sent.append(text)

    async with MeterClient(meter.address) as client:
        done = await namespace["stream_completion"](client, account, 100, 500, model_stream(8), send)
        assert (done.charged_tokens, done.late) == (100 + 80 * 4, False)  # gpt-4o weighs output 4x
        with pytest.raises(ConnectionError):
            await namespace["stream_completion"](client, account, 100, 500, model_stream(3, then_fail=True), send)
    usage = [e["amount"] for e in await ledger(engine, account) if e["kind"] == "usage"]
    assert usage == [-420, -220]  # 100 in + 80 out; 100 in + the 30 out it produced (output 4x)
    assert len(sent) == 11
