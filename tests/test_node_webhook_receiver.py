"""Any language, received: examples/node-webhook-receiver (Node.js, the `standardwebhooks` npm
package) verifies meter's signed webhooks and acts on them, against the real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import StartMeter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.service import webhook_endpoints
from meter.v1 import meter_pb2 as pb
from support import WEBHOOK_SECRET, new_id, run_cli, run_command

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "node-webhook-receiver"


@pytest.fixture
async def node_modules(engine: AsyncEngine) -> AsyncIterator[Path]:
    """`npm ci` from the committed lock file (node_modules is not committed); afterwards the
    endpoint the test adds is removed, so no later test's events go to it."""
    if not (EXAMPLE / "node_modules" / "standardwebhooks").is_dir():
        code, out = await run_command("npm", "ci", "--no-audit", "--no-fund", cwd=EXAMPLE, timeout=600)
        assert code == 0, out
    yield EXAMPLE / "node_modules"
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM webhook_deliveries"))
        await connection.execute(text("DELETE FROM webhook_endpoints"))


async def test_the_node_receiver_verifies_and_tells_the_user(meters: StartMeter, node_modules: Path) -> None:
    meter = await meters(delivery_poll_seconds=0.05)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    added = await webhook_endpoints.add_endpoint(
        meter.service.meter,
        name=new_id("node"),
        url=f"http://127.0.0.1:{port}/meter-events",
        types=["purchase.credited", "balance.warning"],
    )
    receiver = await asyncio.create_subprocess_exec(
        "node", "receiver.js", "--port", str(port), cwd=EXAMPLE,
        env={**os.environ, "METER_WEBHOOK_SECRET": added.secret}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert receiver.stdout is not None
    try:
        listening = await asyncio.wait_for(receiver.stdout.readline(), timeout=30)
        assert json.loads(listening) == {"listening": port}
        account = new_id()
        await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
        # Bought as docs/stripe.md's recipe buys it: Stripe's delivery, signed, without Stripe.
        env = {
            "METER_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "METER_HTTP_ADDR": urlsplit(meter.webhook_url).netloc,
            "METER_GRPC_ADDR": meter.address,
        }
        code, out, err = await run_cli("try-stripe", "purchase", account, "--pack", "pack_1m_tokens", env=env)
        assert code == 0 and "200 applied" in out, out + err
        told = await asyncio.wait_for(receiver.stdout.readline(), timeout=30)
        assert json.loads(told) == {"tell": account, "message": "You bought 1,000,000 tokens"}
        accepted = await asyncio.wait_for(receiver.stdout.readline(), timeout=30)
        assert json.loads(accepted) | {"id": None} == {
            "id": None,
            "type": "purchase.credited",
            "account_id": account,
            "sequence": "3",
            "available": "1050000",
        }
        # What the example's README shows it printing: these lines, the event's id, the port and
        # the account aside.
        printed = (listening + told + accepted).decode()
        assert _masked(printed, account, port) == _readme_transcript()
    finally:
        receiver.terminate()
        await receiver.wait()


def _readme_transcript() -> list[str]:
    readme = (EXAMPLE / "README.md").read_text()
    block = readme.split("$ METER_WEBHOOK_SECRET=whsec_... node receiver.js", 1)[1].split("```", 1)[0]
    return _masked("\n".join(block.splitlines()[1:]), "acme", 8787)


def _masked(output: str, account: str, port: int) -> list[str]:
    lines = output.strip().splitlines()
    return [
        re.sub(r'"id":"[^"]*"', '"id":"…"', line)
        .replace(f'"listening":{port}', '"listening":PORT')
        .replace(account, "acme")
        for line in lines
    ]
