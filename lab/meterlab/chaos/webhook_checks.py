"""Webhooks out under chaos: an endpoint in this process that verifies every delivery with the
`standardwebhooks` library and answers 500 to a share of them at random, and the check after
each scenario: once nothing is pending, every balance event reached it, each `webhook-id` always
with the same event, and each account's events were first delivered in their order."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import Webhook, WebhookVerificationError

# The servers retry quickly, so that a scenario's deliveries settle within its check.
RETRY_SECONDS = (0.2, 0.5) + (1.0,) * 20
SERVER_SETTINGS: dict[str, Any] = {
    "delivery_poll_seconds": 0.2,
    "delivery_timeout_seconds": 2.0,
    "delivery_retry_seconds": RETRY_SECONDS,
}
SERVER_ENV = {
    "METER_DELIVERY_POLL_SECONDS": "0.2",
    "METER_DELIVERY_TIMEOUT_SECONDS": "2",
    "METER_DELIVERY_RETRY_SECONDS": ",".join(map(str, RETRY_SECONDS)),
}
ENDPOINT = "chaos"
SETTLE_SECONDS = 90.0


@dataclass
class WebhookSink:
    failing_share: float = 0.05
    seed: int = 1
    secret: str = ""
    url: str = ""
    forged: int = 0
    failed: int = 0
    bodies: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))  # by webhook-id
    first_delivered: list[str] = field(default_factory=list)  # webhook-ids, first 2xx, in arrival order
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._random = random.Random(self.seed)
        app = web.Application()
        app.router.add_post("/events", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/events"

    def register(self, env: dict[str, str]) -> None:
        """`meter endpoints add`, as an operator would; the secret it prints verifies."""
        added = subprocess.run(
            [sys.executable, "-m", "meter.cli", "endpoints", "add", ENDPOINT, self.url],
            env=env, capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        fields = dict(line.split(":", 1) for line in added.stdout.splitlines())
        self.secret = fields["secret"].strip()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        payload = await request.read()
        try:
            body = Webhook(self.secret).verify(payload, dict(request.headers))
        except WebhookVerificationError:
            self.forged += 1
            return web.Response(status=400)
        webhook_id = request.headers["webhook-id"]
        self.bodies[webhook_id].append(body)
        if self._random.random() < self.failing_share:
            self.failed += 1
            return web.Response(status=500)
        if webhook_id not in self.first_delivered:
            self.first_delivered.append(webhook_id)
        return web.Response(status=204)


async def check(engine: AsyncEngine, sink: WebhookSink) -> tuple[int, list[str]]:
    """(checks made, violations), once no delivery is pending (or SETTLE_SECONDS have passed)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        async with engine.connect() as connection:
            left = (
                await connection.execute(
                    text("SELECT status, count(*) FROM webhook_deliveries WHERE status <> 'delivered' GROUP BY 1")
                )
            ).all()
        if not left or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT account_id, sequence, CAST(event_id AS text) AS id FROM balance_events")
            )
        ).all()
    violations = [f"webhooks: {count} deliveries still {status} after {SETTLE_SECONDS:.0f} s" for status, count in left]
    if sink.forged:
        violations.append(f"webhooks: {sink.forged} deliveries failed signature verification")
    order = {webhook_id: position for position, webhook_id in enumerate(sink.first_delivered)}
    by_account: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for account, sequence, event_id in rows:
        by_account[account].append((sequence, event_id))
        if event_id not in order:
            violations.append(f"webhooks: {account} event {sequence} ({event_id}) never delivered")
        bodies = sink.bodies.get(event_id, [])
        if any(json.dumps(b, sort_keys=True) != json.dumps(bodies[0], sort_keys=True) for b in bodies):
            violations.append(f"webhooks: {event_id} sent with different bodies under one webhook-id")
    for account, events in by_account.items():
        arrivals = [order[event_id] for _, event_id in sorted(events) if event_id in order]
        if arrivals != sorted(arrivals):
            violations.append(f"webhooks: {account}'s events were first delivered out of order")
    known = {event_id for _, _, event_id in rows}
    violations += [
        f"webhooks: {webhook_id} is no balance event" for webhook_id in sink.bodies if webhook_id not in known
    ]
    return len(rows) * 3 + len(by_account), violations
