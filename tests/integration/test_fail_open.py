"""The client's fail policy: closed by default (a Reserve meter cannot answer raises); open within
a per-process budget of tokens per account per minute, when the operator chooses, and every call
let through is charged once meter is back (ChargeUsage, spooled), once."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.client import FailOpen, MeterClient, MeterRpcError, Spooled
from support import balance, eventually, funded_account, ledger


def free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


async def test_closed_by_default_and_open_within_the_budget_charged_once_meter_is_back(
    meters: Any, engine: AsyncEngine, tmp_path: Path
) -> None:
    address = free_address()
    meter = await meters(grpc_addr=address)
    account = await funded_account(meter.stub, 10_000)
    await meter.stop()
    async with MeterClient(address) as closed:
        with pytest.raises(MeterRpcError) as refused:
            await closed.reserve(account_id=account, model="basic", input_tokens=10, max_output_tokens=10)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    proxy = MeterClient(
        address, fail_open=FailOpen(tokens_per_minute=1_000), spool=tmp_path / "spool.sqlite", settle_budget_seconds=0.3
    )
    async with proxy.reserve(account_id=account, model="basic", input_tokens=300, max_output_tokens=200) as first:
        assert first.reservation_id.startswith("fail-open:")
        first.report(input_tokens=300, output_tokens=120)
    assert first.spooled  # charged once meter answers
    async with proxy.reserve(account_id=account, model="basic", input_tokens=300, max_output_tokens=200) as unused:
        pass  # the model call failed: nothing to charge
    assert not unused.spooled
    with pytest.raises(MeterRpcError):  # 1000 tokens this minute are let through, no more
        await proxy.reserve(account_id=account, model="basic", input_tokens=300, max_output_tokens=300)
    with pytest.raises(Spooled):
        await proxy.charge_usage(
            account_id=account, request_id="direct", model="basic", input_tokens=5, output_tokens=5
        )
    assert proxy.spool_depth == 2
    back = await meters(grpc_addr=address)

    async def depth() -> int:
        return proxy.spool_depth

    await eventually(depth, lambda left: left == 0)
    await proxy.close()
    assert (await balance(back.stub, account)).purchased_remaining == 10_000 - 420 - 10
    assert [e["amount"] for e in await ledger(engine, account) if e["kind"] == "usage"] == [-420, -10]


async def test_failing_open_refuses_first_what_meter_would_refuse(meters: Any) -> None:
    """The attack: a `max_output_tokens` of -10^12 let through, and after it 20 calls of 100 000
    tokens through a 1 000-a-minute budget. Each request meter refuses is refused the same way
    (code, reason, field) while meter cannot be reached, before the budget counts anything: the
    budget then lets 1 000 tokens through, no more. A model the catalog the client read does not
    list is UNKNOWN_MODEL."""
    address = free_address()
    meter = await meters(grpc_addr=address)
    account = await funded_account(meter.stub, 10_000)
    proxy = MeterClient(address, fail_open=FailOpen(tokens_per_minute=1_000), attempts=1)
    await proxy.get_catalog()  # the client knows the catalog's models from now on
    refused_by_meter = {
        "max_output_tokens": {"max_output_tokens": -(10**12)},
        "input_tokens": {"input_tokens": 10**9},
        "account_id": {"account_id": "not an account"},
        "request_id": {"request_id": "with space"},
        "ttl_seconds": {"ttl_seconds": -1},
        "labels": {"labels": {f"k{n}": "v" for n in range(33)}},
        "model": {"model": "no-such-model"},
    }

    async def answer(fields: dict[str, Any]) -> tuple[grpc.StatusCode, str, str]:
        request = {"account_id": account, "model": "basic", "input_tokens": 10, "max_output_tokens": 10} | fields
        with pytest.raises(MeterRpcError) as refused:
            await proxy.reserve(**request)
        error = refused.value
        return error.code, error.reason, error.metadata.get("field", error.metadata.get("model", ""))

    meters_answers = {name: await answer(fields) for name, fields in refused_by_meter.items()}
    assert meters_answers["model"] == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_MODEL", "no-such-model")
    await meter.stop()  # from here, meter cannot be reached
    assert {name: await answer(fields) for name, fields in refused_by_meter.items()} == meters_answers
    for _ in range(20):
        beyond = await answer({"max_output_tokens": 100_000})
        assert beyond[:2] == (grpc.StatusCode.UNAVAILABLE, "")
    within = await proxy.reserve(account_id=account, model="basic", input_tokens=300, max_output_tokens=700)
    assert (within.reservation_id.startswith("fail-open:"), within.held_tokens) == (True, 1_000)
    assert (await answer({"input_tokens": 0, "max_output_tokens": 1}))[:2] == (grpc.StatusCode.UNAVAILABLE, "")
    await proxy.close()
