"""Helpers for tests: start a real server, call it, read error details, look at the ledger."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter import bootstrap
from meter.catalog import Catalog, Plan
from meter.catalog import load as load_catalog
from meter.config import Settings
from meter.storage.clock import DatabaseClock
from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc

T = TypeVar("T")

WEBHOOK_SECRET = "whsec_test_meter"


@dataclass
class RunningMeter:
    service: bootstrap.Service
    channel: grpc.aio.Channel
    stub: meter_pb2_grpc.MeterServiceStub
    clock: DatabaseClock

    @property
    def address(self) -> str:
        return self.service.grpc.address

    @property
    def webhook_url(self) -> str:
        return f"http://{self.service.webhooks.address}/webhooks/stripe"

    async def stop(self) -> None:
        await self.channel.close()
        await self.service.stop()


def suite_catalog() -> Catalog:
    """The packaged catalog as most of the suite's servers use it, changed where its pricing would
    only get in the way of a test about metering: no rate limits (the rate-limit tests pass the
    limits they test); accounts open on a plan "free" with no allowance, so that a test's balance
    is exactly what it put in; and starter also sold at a Stripe price, a cheap plan for the
    subscription tests to upgrade from. The packaged plans as the product sells them (the free
    tier's 50 000 a month, what a cancellation leaves) are tested on the packaged catalog itself
    (test_checkout.py, test_catalog_and_config.py)."""
    packaged = load_catalog().without_limits()
    plans = dict(packaged.plans)
    plans["free"] = Plan("free", monthly_allowance_tokens=0, per_account=False)
    plans["starter"] = replace(plans["starter"], stripe_prices=("price_starter_monthly",))
    return replace(packaged, plans=plans, default_plan="free")


async def start_meter(database_url: str, *, catalog: Catalog | None = None, **overrides: Any) -> RunningMeter:
    defaults: dict[str, Any] = {
        "database_url": database_url,
        "grpc_addr": "127.0.0.1:0",
        "http_addr": "127.0.0.1:0",
        # No HTTP/JSON listener unless a test asks for one (tests/integration/test_http_json.py):
        # its default address is one fixed port, which the suite's concurrent servers would share.
        "connect_addr": "off",
        "stripe_webhook_secrets": (WEBHOOK_SECRET,),
        # Tests that exercise the background sweeper ask for a short interval.
        "sweep_interval_seconds": 3600.0,
        # Servers with a Stripe key would reconcile with the emulator's events at start, racing
        # the webhooks a test waits for; tests/integration/test_reconcile.py asks for it.
        "reconcile_interval_seconds": 0,
        "shutdown_grace_seconds": 2.0,
        # A server opens and warms its whole pool before it serves; the suite starts hundreds of
        # them, and no test needs more connections than this.
        "db_pool_size": 5,
    }
    settings = replace(Settings(), **(defaults | overrides))
    clock = DatabaseClock()
    catalog = catalog or suite_catalog()
    service = await bootstrap.start(settings, clock=clock, catalog=catalog)
    channel = grpc.aio.insecure_channel(service.grpc.address)
    return RunningMeter(service, channel, meter_pb2_grpc.MeterServiceStub(channel), clock)


def new_id(prefix: str = "acct") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The one ErrorInfo in a meter error status."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status in {error!r}"
    infos = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            infos.append(info)
    assert len(infos) == 1, f"expected one ErrorInfo, got {status.details}"
    assert infos[0].domain == "meter"
    return infos[0]


async def first_answer(rpc: Any, within: float = 15.0) -> Any:
    """A unary call's answer, or a server stream's first message (the stream then cancelled);
    TimeoutError when a stream sends nothing within `within` seconds (it is waiting for events)."""
    if isinstance(rpc, grpc.aio.UnaryStreamCall):
        try:
            return await asyncio.wait_for(rpc.read(), timeout=within)
        finally:
            rpc.cancel()
    return await rpc


async def expect_error(call: Any, code: grpc.StatusCode, reason: str) -> error_details_pb2.ErrorInfo:
    """`call`: a unary call (or any awaitable), or a server stream, whose first message must fail."""
    try:
        response = await first_answer(call)
    except grpc.aio.AioRpcError as error:
        assert error.code() == code, f"{error.code()} {error.details()}"
        info = error_info(error)
        assert info.reason == reason, f"{info.reason}: {error.details()}"
        return info
    raise AssertionError(f"expected {code.name} {reason}, got {response}")


async def funded_account(
    stub: meter_pb2_grpc.MeterServiceStub,
    tokens: int,
    *,
    plan: str = "free",
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> str:
    """An account with `tokens` in its purchased pool (through SetPlan and Adjust; `metadata`
    carries an operator's token when callers are configured)."""
    account = new_id()
    await stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id=plan), metadata=metadata)
    if tokens:
        await stub.Adjust(
            pb.AdjustRequest(
                account_id=account,
                pool=pb.POOL_PURCHASED,
                delta=tokens,
                reason="test funding",
                request_id=new_id("fund"),
            ),
            metadata=metadata,
        )
    return account


def reserve_request(account: str, **fields: Any) -> pb.ReserveRequest:
    """A Reserve on the `basic` model (weights 1): held = input_tokens + max_output_tokens."""
    values: dict[str, Any] = {
        "request_id": new_id("req"),
        "model": "basic",
        "input_tokens": 50,
        "max_output_tokens": 50,
    }
    values.update(fields)
    return pb.ReserveRequest(account_id=account, **values)


def pack_purchase(account: str, **fields: Any) -> pb.CreditPurchaseRequest:
    """A CreditPurchase of the catalog's pack_1000_tokens as sold, with a fresh payment_ref."""
    values: dict[str, Any] = {
        "pack_id": "pack_1000_tokens",
        "tokens": 1000,
        "amount_minor": 100,
        "currency": "usd",
        "payment_ref": new_id("cs"),
    }
    values.update(fields)
    return pb.CreditPurchaseRequest(account_id=account, **values)


async def balance(stub: meter_pb2_grpc.MeterServiceStub, account: str) -> pb.Balance:
    return (await stub.GetBalance(pb.GetBalanceRequest(account_id=account))).balance


async def ledger(engine: AsyncEngine, account: str) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT kind, pool, amount, reservation_id, ref FROM ledger_entries "
                "WHERE account_id = :a ORDER BY entry_id"
            ),
            {"a": account},
        )
        return [dict(row) for row in rows.mappings()]


@asynccontextmanager
async def planted(
    engine: AsyncEngine, account: str, kind: str, pool: str, amount: int, ref: str
) -> AsyncIterator[None]:
    """A fault planted in the ledger: an entry meter did not write, its pool's buckets moved to
    match (the balance audit stays clean). Taken out afterwards, the trigger that keeps the ledger
    append-only skipped for that: the session's database is every test's, and the audit after each
    test reads all of it."""
    move = text(
        "UPDATE buckets SET available = available + :amount WHERE account_id = :a AND pool = :pool "
        "AND bucket = (SELECT min(bucket) FROM buckets WHERE account_id = :a AND pool = :pool "
        "AND available + :amount >= 0)"
    )
    async with engine.begin() as connection:
        entry = await connection.scalar(
            text(
                "INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, ref) "
                "VALUES (:a, now(), 'test', :kind, :pool, :amount, :ref) RETURNING entry_id"
            ),
            {"a": account, "kind": kind, "pool": pool, "amount": amount, "ref": ref},
        )
        assert (await connection.execute(move, {"a": account, "pool": pool, "amount": amount})).rowcount == 1
    try:
        yield
    finally:
        async with engine.begin() as connection:
            await connection.execute(text("SET LOCAL session_replication_role = replica"))
            await connection.execute(
                text("DELETE FROM ledger_entries WHERE account_id = :a AND entry_id = :e"), {"a": account, "e": entry}
            )
            await connection.execute(move, {"a": account, "pool": pool, "amount": -amount})


async def balance_events(engine: AsyncEngine, account: str) -> list[dict[str, Any]]:
    """The account's balance events, in their order."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT sequence, type, payload, occurred_at FROM balance_events "
                "WHERE account_id = :a ORDER BY sequence"
            ),
            {"a": account},
        )
        return [dict(row) for row in rows.mappings()]


async def database_now(engine: AsyncEngine) -> datetime:
    async with engine.connect() as connection:
        return (await connection.execute(text("SELECT now()"))).scalar_one()


async def eventually(probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], *, within: float = 15.0) -> T:
    """Poll until `accept(probe())`, failing after `within` seconds (no fixed sleeps)."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s; last value: {value}")
        await asyncio.sleep(0.02)


def time_until(instant: datetime, now: datetime) -> timedelta:
    return instant - now


_FINGERPRINT = """
SELECT (SELECT count(*) FROM accounts AS a
        WHERE NOT EXISTS (SELECT 1 FROM refused_purchases AS r
                          WHERE r.account_id = a.account_id AND r.refused_at = a.created_at)),
       (SELECT count(*) FROM holds),
       (SELECT count(*) FROM holds WHERE status = 'open'), (SELECT count(*) FROM ledger_entries),
       (SELECT coalesce(sum(available + held), 0) FROM buckets), (SELECT count(*) FROM purchases),
       (SELECT count(*) FROM adjustments), (SELECT count(*) FROM webhook_events WHERE status <> 'rejected'),
       (SELECT coalesce(sum(extract(epoch FROM expires_at)), 0) FROM holds WHERE status = 'open'),
       (SELECT coalesce(string_agg(plan_id || debt, ','), '') FROM accounts AS a
        WHERE NOT EXISTS (SELECT 1 FROM refused_purchases AS r
                          WHERE r.account_id = a.account_id AND r.refused_at = a.created_at))
"""


async def fingerprint(engine: AsyncEngine) -> tuple[Any, ...]:
    """Everything a request could change. Two changes a refusal makes on purpose are left out: a
    refused request that carries its Stripe event records that event as `rejected` (so it can be
    replayed once fixed), and a paid purchase the catalog refuses is kept, on its account (opened
    for it if new), for support to refund (purchase.refused)."""
    async with engine.connect() as connection:
        return tuple((await connection.execute(text(_FINGERPRINT))).one())


async def run_cli(
    *args: str, token: str | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, str, str]:
    """Run the CLI (`meter ARGS`) without blocking this loop, which also runs the server it calls;
    `token` becomes METER_TOKEN, `env` is added to the environment, `cwd` the folder it runs in."""
    variables = {**os.environ, "METER_LOG_LEVEL": "WARNING", **(env or {})}
    if token:
        variables["METER_TOKEN"] = token
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meter.cli",
        *args,
        env=variables,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def run_command(
    *command: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str]:
    """Run a program to its end; its exit code and its output (stdout and stderr together)."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=timeout)
    assert process.returncode is not None
    return process.returncode, out.decode()


def shown_after(readme: Path, prompt: str) -> list[str]:
    """The lines an example's README shows its commands printing, from the first `prompt` to the
    end of that block (the commands themselves left out)."""
    block = readme.read_text().split(prompt, 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines()[1:] if line.strip() and not line.startswith("$ ")]


def reservations_as_shown(output: str, account: str) -> list[str]:
    """Printed lines with the account and its reservation ids as the READMEs write them
    (`acme`, `acme/...`), whatever the JSON's spacing."""
    return [
        re.sub(r'("reservation_id": ?)"[^"]*"', r'\1"acme/..."', line).replace(account, "acme")
        for line in output.strip().splitlines()
    ]
