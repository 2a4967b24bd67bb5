"""A real HTTP endpoint for meter's webhooks, verifying each with the `standardwebhooks` library as
a product's receiver would. Tests make it fail (answer 500, or another status) or hang for a while."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    webhook_id: str
    body: dict[str, Any]
    answered: int
    authorization: str | None = None


@dataclass
class Receiver:
    secret: str = ""
    fail_next: int = 0  # answer this many requests `failing_status` (then 200)
    failing_status: int = 500
    hang: asyncio.Event | None = None  # while set to an event, hold requests until it is set
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set by every request
    received: list[Received] = field(default_factory=list)  # every verified request, in arrival order
    forged: int = 0
    in_flight: dict[str, int] = field(default_factory=dict)
    overlapping: list[str] = field(default_factory=list)  # webhook-ids sent again while still in flight
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/meter-events", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/meter-events"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        payload = await request.read()
        try:
            Webhook(self.secret).verify(payload, dict(request.headers))
        except WebhookVerificationError:
            self.forged += 1
            return web.Response(status=400)
        webhook_id = request.headers["webhook-id"]
        if self.in_flight.get(webhook_id):
            self.overlapping.append(webhook_id)
        self.in_flight[webhook_id] = self.in_flight.get(webhook_id, 0) + 1
        self.arrived.set()
        try:
            if self.hang is not None:
                await self.hang.wait()
            status = self.failing_status if self.fail_next > 0 else 200
            self.fail_next = max(0, self.fail_next - 1)
            authorization = request.headers.get("Authorization")
            self.received.append(Received(webhook_id, json.loads(payload), status, authorization))
            return web.Response(status=status)
        finally:
            self.in_flight[webhook_id] -= 1

    def delivered(self) -> list[Received]:
        return [r for r in self.received if r.answered == 200]
