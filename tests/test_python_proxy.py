"""examples/python-proxy, run as its README shows: proxy.py reserves, commits and handles
INSUFFICIENT_TOKENS by its ErrorInfo reason against the real server, under a caller with the proxy
role; what it prints is the README's transcript; and the step docs/integrate.md shows is the
program's own code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import StartMeter

from meter.domain.callers import hash_token, new_token
from meter.v1 import meter_pb2 as pb
from support import funded_account, reservations_as_shown, run_command, shown_after

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "python-proxy"
PROXY_TOKEN, OPS_TOKEN = new_token(), new_token()
CALLERS = (
    f'[[caller]]\nname = "python-proxy"\nrole = "proxy"\ntoken_sha256 = "{hash_token(PROXY_TOKEN)}"\n'
    f'[[caller]]\nname = "ops"\nrole = "operator"\ntoken_sha256 = "{hash_token(OPS_TOKEN)}"\n'
)


async def test_the_python_proxy_reserves_commits_and_handles_insufficient_tokens(meters: StartMeter) -> None:
    meter = await meters(callers_toml=CALLERS, webhook_token=OPS_TOKEN)
    ops = (("authorization", f"Bearer {OPS_TOKEN}"),)
    account = await funded_account(meter.stub, 5000, metadata=ops)
    step = (sys.executable, "proxy.py", "--target", meter.address, "--account", account, "--model", "gpt-4o")
    sizes = ("--input", "1200", "--max-output", "800", "--output", "350")
    as_proxy = {"METER_TOKEN": PROXY_TOKEN}

    code, first = await run_command(*step, *sizes, cwd=EXAMPLE, env=as_proxy)
    assert code == 0, first
    reserved, committed = map(json.loads, first.splitlines())
    assert reserved == {"step": "reserved", "reservation_id": committed["reservation_id"]}
    assert committed["reservation_id"].startswith(f"{account}/")
    assert (committed["held_tokens"], committed["charged_tokens"], committed["cost_micros"]) == ("4400", "2600", "6500")

    code, second = await run_command(*step, *sizes, cwd=EXAMPLE, env=as_proxy)
    assert code == 1, second
    assert json.loads(second) == {
        "step": "refused",
        "reason": "INSUFFICIENT_TOKENS",
        "required": "4400",
        "available": "2400",
    }
    transcript = shown_after(EXAMPLE / "README.md", "$ METER_TOKEN=meter_... python proxy.py")
    assert reservations_as_shown(first + second, account) == reservations_as_shown("\n".join(transcript), "acme")

    balance = (await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account), metadata=ops)).balance
    assert (balance.used_this_period, balance.held, balance.available) == (2600, 0, 2400)
    entries = await meter.stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(account_id=account), metadata=ops)
    assert [(e.amount, e.caller) for e in entries.entries if e.kind == pb.ENTRY_KIND_USAGE] == [(-2600, "python-proxy")]


def test_the_step_the_integration_guide_shows_is_the_programs() -> None:
    guide = (ROOT / "docs" / "integrate.md").read_text()
    section = guide.split("## A proxy step in Python", 1)[1]
    shown = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert shown.startswith("async def proxy_step(")
    assert shown in (EXAMPLE / "proxy.py").read_text()
