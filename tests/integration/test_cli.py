"""The CLI as a newcomer meets it: `--version`, `--json` on the read commands, shell completion,
commands that load only what they need, and errors that name their fix (an address in use, a
malformed or unreachable database, a missing catalog, a command run away from its database).
(How long the commands take is measured, not asserted: see the README's figures.)"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

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


async def test_a_malformed_database_url_is_refused_naming_it_before_anything_starts(tmp_path: Path) -> None:
    code, _, err = await run_cli("serve", env={"METER_DATABASE_URL": "not-a-url"}, cwd=tmp_path)
    assert code == 2
    assert "METER_DATABASE_URL: 'not-a-url' is not a URL; write it postgresql://" in err
    assert "Traceback" not in err and not (tmp_path / ".meter").exists()


async def test_a_catalog_file_that_is_not_there_names_meter_catalog(tmp_path: Path) -> None:
    code, _, err = await run_cli("serve", env={"METER_CATALOG": str(tmp_path / "nope.toml")}, cwd=tmp_path)
    assert code == 2
    assert f"METER_CATALOG names a catalog that does not load: {tmp_path / 'nope.toml'}: No such file" in err


async def test_a_database_command_elsewhere_makes_no_database_there(tmp_path: Path) -> None:
    environment = {"METER_DATABASE_URL": ""}
    for command in (["endpoints", "list"], ["deliveries", "list"], ["audit"], ["retention"]):
        code, _, err = await run_cli(*command, env=environment, cwd=tmp_path)
        assert code == 2, (command, err)
        assert "no database: METER_DATABASE_URL is not set" in err and "Traceback" not in err
    assert not (tmp_path / ".meter").exists()


async def test_a_database_that_does_not_answer_is_named_without_a_traceback(tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql://meter:secret@127.0.0.1:{port}/meter"
    for command in (["migrate"], ["audit"], ["endpoints", "list"]):
        code, _, err = await run_cli(*command, env={"METER_DATABASE_URL": url}, cwd=tmp_path)
        assert code == 2, (command, err)
        assert f"cannot use the database at postgresql://meter:***@127.0.0.1:{port}/meter (METER_DATABASE_URL)" in err
        assert "ConnectionRefusedError" in err and "secret" not in err and "Traceback" not in err


async def test_replaying_an_event_meter_never_received_says_which_ids_it_takes(meter: RunningMeter) -> None:
    code, out, err = await run_cli("webhooks", "replay", "evt_never_sent", "--target", meter.address)
    assert (code, out) == (1, "")
    assert "no Stripe event evt_never_sent is stored: replay takes the id of an event the adapter received" in err
