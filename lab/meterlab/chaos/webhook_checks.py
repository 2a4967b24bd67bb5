"""Webhooks out under chaos: an endpoint in this process that verifies every delivery with the
`standardwebhooks` library and answers 500 to a share of them at random, beside two that
misbehave (hostile_receivers: a tarpit that never answers, and a redirector answering 302 and
307 toward another origin), and the check after each scenario: once nothing is pending for the
healthy endpoint, every balance event reached it, each `webhook-id` always with the same event,
each account's events were first delivered in their order and within MAX_DELAY_SECONDS of being
made; no delivery to a misbehaving endpoint counts as delivered, and the redirects' target was
never reached."""

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

from meterlab.chaos.hostile_receivers import Redirector, Tarpit
from meterlab.chaos.report import Delays

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
TARPIT = "chaos-tarpit"
REDIRECTS = {302: "chaos-302", 307: "chaos-307"}
SETTLE_SECONDS = 90.0
# From an event's making to its first 2xx at the healthy endpoint, whatever else is slow; with one
# pass waiting for its slowest send, a tarpit made this 20-60 s and growing.
MAX_DELAY_SECONDS = 15.0


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
    delivered_at: dict[str, float] = field(default_factory=dict)  # webhook-id: its first 2xx (epoch seconds)
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
        self.secret = add_endpoint(env, ENDPOINT, self.url)["secret"]

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
        if webhook_id not in self.delivered_at:
            self.first_delivered.append(webhook_id)
            self.delivered_at[webhook_id] = time.time()
        return web.Response(status=204)


def add_endpoint(env: dict[str, str], name: str, url: str) -> dict[str, str]:
    """`meter endpoints add NAME URL`: the fields it prints."""
    added = subprocess.run(
        [sys.executable, "-m", "meter.cli", "endpoints", "add", name, url],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return {key: value.strip() for key, value in (line.split(":", 1) for line in added.stdout.splitlines())}


@dataclass
class Receivers:
    """The healthy endpoint, and (unless left out) a tarpit and a redirector beside it."""

    sink: WebhookSink
    hostile: bool = True
    tarpit: Tarpit = field(default_factory=Tarpit)
    redirector: Redirector = field(default_factory=Redirector)

    async def start(self) -> None:
        await self.sink.start()
        if self.hostile:
            await self.tarpit.start()
            await self.redirector.start()

    def register(self, env: dict[str, str]) -> None:
        self.sink.register(env)
        if self.hostile:
            add_endpoint(env, TARPIT, self.tarpit.url)
            for status, name in REDIRECTS.items():
                add_endpoint(env, name, self.redirector.url(status))

    def summary(self) -> str:
        if not self.hostile:
            return ""
        return (
            f"beside it: a tarpit, sent {self.tarpit.accepted} connections (none answered), and endpoints "
            f"redirecting (302, 307), {self.redirector.redirected} redirects answered, "
            f"{self.redirector.target_hits} requests reached their target"
        )

    async def stop(self) -> None:
        await self.sink.stop()
        if self.hostile:
            await self.tarpit.stop()
            await self.redirector.stop()


async def check(
    engine: AsyncEngine, receivers: Receivers, delays_since: int | None
) -> tuple[int, list[str], Delays | None]:
    """(checks made, violations, the delays of the events first delivered since position
    `delays_since` of the sink's arrivals; None: not measured), once nothing is pending for the
    healthy endpoint (or SETTLE_SECONDS have passed)."""
    sink = receivers.sink
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        async with engine.connect() as connection:
            left = (
                await connection.execute(
                    text(
                        "SELECT status, count(*) FROM webhook_deliveries WHERE status <> 'delivered' "
                        "AND endpoint_id = :endpoint GROUP BY 1"
                    ),
                    {"endpoint": ENDPOINT},
                )
            ).all()
        if not left or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT account_id, sequence, CAST(event_id AS text) AS id, occurred_at FROM balance_events")
            )
        ).all()
        hostile_delivered = (
            await connection.execute(
                text(
                    "SELECT endpoint_id, count(*) FROM webhook_deliveries WHERE status = 'delivered' "
                    "AND endpoint_id = ANY(:hostile) GROUP BY 1"
                ),
                {"hostile": [TARPIT, *REDIRECTS.values()]},
            )
        ).all()
    violations = [f"webhooks: {count} deliveries still {status} after {SETTLE_SECONDS:.0f} s" for status, count in left]
    if sink.forged:
        violations.append(f"webhooks: {sink.forged} deliveries failed signature verification")
    violations += [f"webhooks: {count} deliveries to {name} counted delivered" for name, count in hostile_delivered]
    violations += _hostile_violations(receivers)
    order = {webhook_id: position for position, webhook_id in enumerate(sink.first_delivered)}
    by_account: dict[str, list[tuple[int, str]]] = defaultdict(list)
    made: dict[str, float] = {}
    for account, sequence, event_id, occurred_at in rows:
        by_account[account].append((sequence, event_id))
        made[event_id] = occurred_at.timestamp()
        if event_id not in order:
            violations.append(f"webhooks: {account} event {sequence} ({event_id}) never delivered")
        bodies = sink.bodies.get(event_id, [])
        if any(json.dumps(b, sort_keys=True) != json.dumps(bodies[0], sort_keys=True) for b in bodies):
            violations.append(f"webhooks: {event_id} sent with different bodies under one webhook-id")
    for account, events in by_account.items():
        arrivals = [order[event_id] for _, event_id in sorted(events) if event_id in order]
        if arrivals != sorted(arrivals):
            violations.append(f"webhooks: {account}'s events were first delivered out of order")
    known = {event_id for _, _, event_id, _ in rows}
    violations += [
        f"webhooks: {webhook_id} is no balance event" for webhook_id in sink.bodies if webhook_id not in known
    ]
    delays = None
    if delays_since is not None:
        measured = {i: sink.delivered_at[i] - made[i] for i in sink.first_delivered[delays_since:] if i in made}
        delays = Delays.of(list(measured.values()))
        late = sorted(delay for delay in measured.values() if delay > MAX_DELAY_SECONDS)
        if late:
            violations.append(
                f"webhooks: {len(late)} events reached the healthy endpoint more than {MAX_DELAY_SECONDS:.0f} s "
                f"after they were made (the longest {late[-1]:.1f} s)"
            )
    return len(rows) * 4 + len(by_account), violations, delays


def _hostile_violations(receivers: Receivers) -> list[str]:
    """The misbehaving endpoints were sent to (else the run proves nothing about them) and no
    redirect was followed."""
    if not receivers.hostile:
        return []
    violations = []
    if receivers.tarpit.accepted == 0:
        violations.append("webhooks: the tarpit was never sent to")
    if receivers.redirector.redirected == 0:
        violations.append("webhooks: the redirecting endpoints were never sent to")
    if receivers.redirector.target_hits:
        violations.append(f"webhooks: a redirect was followed ({receivers.redirector.target_hits} requests)")
    return violations
