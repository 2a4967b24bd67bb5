"""Any language, proved: examples/node-proxy (Node.js, @grpc/grpc-js and @grpc/proto-loader,
loading protos/ as it is) reserves, commits and handles INSUFFICIENT_TOKENS by its ErrorInfo
reason against the real server, under a caller with the proxy role."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
from pathlib import Path

import pytest
from conftest import StartMeter

from meter.domain.callers import hash_token, new_token
from meter.v1 import meter_pb2 as pb
from support import funded_account, reservations_as_shown, run_command, shown_after

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "node-proxy"
PROXY_TOKEN, OPS_TOKEN = new_token(), new_token()
CALLERS = (
    f'[[caller]]\nname = "node-proxy"\nrole = "proxy"\ntoken_sha256 = "{hash_token(PROXY_TOKEN)}"\n'
    f'[[caller]]\nname = "ops"\nrole = "operator"\ntoken_sha256 = "{hash_token(OPS_TOKEN)}"\n'
)


@pytest.fixture(scope="module")
async def node_modules() -> Path:
    """`npm ci` from the committed lock file, once (node_modules is not committed)."""
    assert shutil.which("node") and shutil.which("npm"), "Node.js and npm are needed for the example"
    if not (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        code, out = await run_command("npm", "ci", "--no-audit", "--no-fund", cwd=EXAMPLE, timeout=600)
        assert code == 0, out
    return EXAMPLE / "node_modules"


async def test_the_node_proxy_reserves_commits_and_handles_insufficient_tokens(
    meters: StartMeter, node_modules: Path
) -> None:
    meter = await meters(callers_toml=CALLERS, webhook_token=OPS_TOKEN)
    ops = (("authorization", f"Bearer {OPS_TOKEN}"),)
    account = await funded_account(meter.stub, 5000, metadata=ops)
    step = ("node", "proxy.js", "--target", meter.address, "--account", account, "--model", "gpt-4o")
    sizes = ("--input", "1200", "--max-output", "800", "--output", "350")
    as_proxy = {"METER_TOKEN": PROXY_TOKEN}

    code, out = await run_command(*step, *sizes, cwd=EXAMPLE, env=as_proxy)
    assert code == 0, out
    first = out
    reserved, committed = map(json.loads, out.splitlines())
    assert reserved == {"step": "reserved", "reservation_id": committed["reservation_id"]}
    assert committed["step"] == "committed"
    assert committed["reservation_id"].startswith(f"{account}/")
    assert (committed["held_tokens"], committed["charged_tokens"], committed["cost_micros"]) == ("4400", "2600", "6500")
    assert committed["available"] == "2400"

    code, out = await run_command(*step, *sizes, cwd=EXAMPLE, env=as_proxy)
    assert code == 0, out
    assert json.loads(out) == {
        "step": "refused",
        "reason": "INSUFFICIENT_TOKENS",
        "required": "4400",
        "available": "2400",
    }
    # The example's README shows these two runs: what they printed, ids aside, line by line.
    transcript = shown_after(EXAMPLE / "README.md", "$ METER_TOKEN=meter_... node proxy.js")
    assert reservations_as_shown(first + out, account) == reservations_as_shown("\n".join(transcript), "acme")

    code, out = await run_command(*step, *sizes, cwd=EXAMPLE)  # no token
    assert code == 1
    assert json.loads(out)["code"] == "UNAUTHENTICATED" and json.loads(out)["reason"] == "MISSING_CREDENTIALS"

    balance = (await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account), metadata=ops)).balance
    assert (balance.used_this_period, balance.held, balance.available) == (2600, 0, 2400)
    entries = await meter.stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(account_id=account), metadata=ops)
    assert [(e.amount, e.caller) for e in entries.entries if e.kind == pb.ENTRY_KIND_USAGE] == [(-2600, "node-proxy")]


async def test_the_node_proxy_commits_through_a_restart_of_meter(meters: StartMeter, node_modules: Path) -> None:
    """The service config it loads makes Commit wait for meter and retry: meter stops while the
    model is called and comes back on its address, and the call is still charged, once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    first = await meters(grpc_addr=address, callers_toml=CALLERS, webhook_token=OPS_TOKEN)
    ops = (("authorization", f"Bearer {OPS_TOKEN}"),)
    account = await funded_account(first.stub, 5000, metadata=ops)
    proxy = await asyncio.create_subprocess_exec(
        "node", "proxy.js", "--target", address, "--account", account, "--model", "gpt-4o",
        "--input", "1200", "--max-output", "800", "--output", "350", "--model-seconds", "2",
        cwd=EXAMPLE, env={**os.environ, "METER_TOKEN": PROXY_TOKEN}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proxy.stdout is not None
    reserved = json.loads(await asyncio.wait_for(proxy.stdout.readline(), timeout=60))
    assert reserved["step"] == "reserved"
    await first.stop()  # while the model is being called
    second = await meters(grpc_addr=address, callers_toml=CALLERS, webhook_token=OPS_TOKEN)
    committed = json.loads(await asyncio.wait_for(proxy.stdout.readline(), timeout=60))
    assert await proxy.wait() == 0
    assert (committed["step"], committed["charged_tokens"]) == ("committed", "2600")
    balance = (await second.stub.GetBalance(pb.GetBalanceRequest(account_id=account), metadata=ops)).balance
    assert (balance.used_this_period, balance.held, balance.available) == (2600, 0, 2400)
