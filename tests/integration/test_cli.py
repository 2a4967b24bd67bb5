"""The CLI as a newcomer meets it: `--version`, `--json` on the read commands, shell completion,
commands that load only what they need, and an address in use named by the setting that moves it.
(How long the commands take is measured, not asserted: see the README's figures.)"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys

import pytest

from meter.v1 import meter_pb2 as pb
from meterlab.testbed import free_port
from support import RunningMeter, funded_account, new_id, reserve_request, run_cli

# What the server stack brings; a command that only reads from a running meter needs none of it.
SERVER_STACK = ("sqlalchemy", "alembic", "asyncpg", "aiohttp", "stripe", "uvloop")

LOADED = """
import sys
from meter import cli
try:
    code = cli.main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(%r))
print("LOADED", ",".join(heavy), file=sys.stderr)
"""


async def loaded_by(*args: str) -> tuple[str, list[str]]:
    """Run `meter ARGS` in a fresh interpreter: its output, and which server-stack packages it loaded."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LOADED % (SERVER_STACK,),
        *args,
        env={**os.environ, "METER_LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    marker = [line for line in err.decode().splitlines() if line.startswith("LOADED")]
    assert marker, err.decode()
    return out.decode(), [name for name in marker[-1].removeprefix("LOADED").strip().split(",") if name]


async def test_help_and_reading_an_account_load_no_server_stack(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 1_000)
    printed, loaded = await loaded_by("--help")
    assert "account" in printed and "completion" in printed and loaded == []
    printed, loaded = await loaded_by("account", "show", account, "--target", meter.address)
    assert f"account {account}" in printed and loaded == []


async def test_version_and_completion() -> None:
    code, out, _ = await run_cli("--version")
    assert code == 0 and out.startswith("meter ") and out.split()[1][0].isdigit()
    code, out, _ = await run_cli("completion", "bash")
    assert code == 0 and "complete" in out and "account" in out and "purchases" in out


async def test_read_commands_print_json(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 5_000)
    reserved = await meter.stub.Reserve(reserve_request(account))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=reserved.reservation_id, input_tokens=50, output_tokens=10))

    code, out, err = await run_cli("account", "show", account, "--json", "--target", meter.address)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["balance"]["account_id"] == account
    assert int(shown["balance"]["purchased_remaining"]) + int(shown["balance"]["used_this_period"]) == 5_000
    assert {e["kind"] for e in shown["recent_entries"]} >= {"ENTRY_KIND_USAGE", "ENTRY_KIND_ADJUSTMENT"}

    code, out, err = await run_cli("usage", account, "--by", "model", "--json", "--target", meter.address)
    assert code == 0, err
    report = json.loads(out)
    assert len(report["rows"]) == 1 and int(report["total"]["requests"]) == 1
    assert int(report["total"]["input_tokens"]) == 50

    code, out, err = await run_cli("purchases", "refused", "--account", new_id(), "--json", "--target", meter.address)
    assert (code, json.loads(out)) == (0, [])


async def test_json_goes_before_the_command_as_well_as_after_it(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 5_000)
    _, after, _ = await run_cli("account", "show", account, "--json", "--target", meter.address)
    code, before, err = await run_cli("--json", "account", "show", account, "--target", meter.address)
    assert code == 0, err
    assert json.loads(before)["balance"] == json.loads(after)["balance"]
    code, out, _ = await run_cli("--json", "purchases", "refused", "--account", new_id(), "--target", meter.address)
    assert (code, json.loads(out)) == (0, [])


async def test_json_before_a_command_without_json_output_is_refused_saying_so() -> None:
    code, _, err = await run_cli("--json", "migrate")
    assert code == 2
    assert "--json: `meter migrate` has no JSON output" in err


@pytest.mark.parametrize("setting", ["METER_GRPC_ADDR", "METER_HTTP_ADDR"])
async def test_an_address_in_use_names_the_setting_that_moves_it(setting: str, database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        others = {"METER_GRPC_ADDR": "127.0.0.1:0", "METER_HTTP_ADDR": "127.0.0.1:0", "METER_CONNECT_ADDR": "off"}
        code, out, err = await run_cli("serve", env={**others, setting: address, "METER_DATABASE_URL": database_url})
    assert code == 2, out + err
    assert f"cannot listen on {address} ({setting})" in err and f"set {setting} to a free address" in err
    assert "Traceback" not in err


async def test_nothing_answering_names_the_target_and_how_to_change_it() -> None:
    code, _, err = await run_cli("account", "show", "acme", "--target", f"127.0.0.1:{free_port()}")
    assert code == 1 and "UNAVAILABLE" in err
    assert "is meter running? --target HOST:PORT or METER_GRPC_ADDR names it" in err
