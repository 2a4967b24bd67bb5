"""The client's spool: a Commit meter cannot be reached for is kept on disk, across a restart of
the proxy, and charged exactly once when meter is back; a proxy that dies while it waits loses
nothing either (the call is written before it is sent)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import grpc
import pytest

from meter.client import MeterClient, MeterRpcError, Spooled
from meter.client_spool import SPOOL_DEPTH
from meter.v1 import meter_pb2 as pb
from support import balance, eventually, funded_account, ledger


def free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


async def reserved(meters: Any, address: str, tokens: int) -> tuple[Any, str, pb.ReserveResponse]:
    meter = await meters(grpc_addr=address)
    account = await funded_account(meter.stub, tokens)
    hold = await meter.stub.Reserve(
        pb.ReserveRequest(
            account_id=account, request_id=f"r-{account}", model="basic", input_tokens=100, max_output_tokens=100
        )
    )
    return meter, account, hold


async def test_a_commit_spooled_while_meter_is_down_is_charged_once_after_a_proxy_restart(
    meters: Any, tmp_path: Path, engine: Any
) -> None:
    address, spool = free_address(), tmp_path / "spool.sqlite"
    meter, account, hold = await reserved(meters, address, 1000)
    await meter.stop()
    async with MeterClient(address, spool=spool, settle_budget_seconds=0.5) as proxy:
        with pytest.raises(Spooled) as spooled:
            await proxy.commit(reservation_id=hold.reservation_id, input_tokens=100, output_tokens=40)
        assert (spooled.value.code, spooled.value.reason) == (grpc.StatusCode.UNAVAILABLE, "SPOOLED")
        assert proxy.spool_depth == 1
        assert SPOOL_DEPTH.labels(str(spool))._value.get() == 1
    # The proxy restarts (a new client on the same file) and meter is back: the spool drains.
    back = await meters(grpc_addr=address)
    async with MeterClient(address, spool=spool) as restarted:

        async def depth() -> int:
            return restarted.spool_depth

        await eventually(depth, lambda left: left == 0)
        again = await restarted.commit(reservation_id=hold.reservation_id, input_tokens=100, output_tokens=40)
        assert again.charged_tokens == 140  # a replay: the same answer, charged once
    assert (await balance(back.stub, account)).purchased_remaining == 860
    assert [e["amount"] for e in await ledger(engine, account) if e["kind"] == "usage"] == [-140]


async def test_a_proxy_that_dies_while_waiting_for_meter_leaves_the_commit_in_the_spool(
    meters: Any, tmp_path: Path
) -> None:
    address, spool = free_address(), tmp_path / "spool.sqlite"
    meter, account, hold = await reserved(meters, address, 1000)
    await meter.stop()
    proxy = MeterClient(address, spool=spool, settle_budget_seconds=60)
    waiting = asyncio.create_task(proxy.commit(reservation_id=hold.reservation_id, input_tokens=100, output_tokens=10))

    async def depth() -> int:
        return proxy.spool_depth

    await eventually(depth, lambda left: left == 1)  # written before it was sent
    waiting.cancel()  # the proxy dies
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await proxy.close()
    back = await meters(grpc_addr=address)
    async with MeterClient(address, spool=spool) as restarted:
        assert await restarted.drain_spool() == 1
        assert restarted.spool_depth == 0
    assert (await balance(back.stub, account)).purchased_remaining == 890


async def test_a_refused_spooled_call_is_answered_and_leaves_the_spool(meters: Any, tmp_path: Path) -> None:
    """A refusal is meter's answer (here: the hold was released meanwhile): it is not sent again."""
    address, spool = free_address(), tmp_path / "spool.sqlite"
    meter, account, hold = await reserved(meters, address, 1000)
    await meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id))
    async with MeterClient(address, spool=spool, settle_budget_seconds=0.5) as proxy:
        with pytest.raises(MeterRpcError) as refused:
            await proxy.commit(reservation_id=hold.reservation_id, input_tokens=1, output_tokens=1)
        assert refused.value.reason == "RESERVATION_RELEASED" and not isinstance(refused.value, Spooled)
        assert proxy.spool_depth == 0
        # A Hold whose settle is spooled does not raise: the call is safe on disk.
        hold_in_block = None
        async with proxy.reserve(account_id=account, model="basic", input_tokens=10, max_output_tokens=10) as held:
            hold_in_block = held
            held.report(input_tokens=10, output_tokens=5)
            await meter.stop()
        assert hold_in_block.spooled
        assert proxy.spool_depth == 1
