"""POST /webhooks/stripe on aiohttp: read the raw body, verify, map, forward, answer. The same
server answers GET /metrics (Prometheus text format)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from meter.client import MeterClient, MeterRpcError
from meter.domain.events import WebhookEvent
from meter.webhooks.forward import Outcome, forward
from meter.webhooks.mapping import action_for
from meter.webhooks.verify import NotAnEvent, verified_event

log = logging.getLogger(__name__)

PATH = "/webhooks/stripe"
METRICS_PATH = "/metrics"
MAX_BODY_BYTES = 1_000_000  # Stripe events are a few kB; aiohttp answers 413 above this


async def _metrics(request: web.Request) -> web.Response:
    """The process's Prometheus metrics (prometheus_client's default registry), text format."""
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


class WebhookServer:
    """The adapter's HTTP server, a gRPC client of meter at `client`'s target."""

    def __init__(self, client: MeterClient, secrets: Sequence[str], address: str) -> None:
        self._client = client
        self._secrets = tuple(secrets)
        host, _, port = address.rpartition(":")
        self._host, self._port = host or "127.0.0.1", int(port)
        self.outcomes: Counter[str] = Counter()  # events by outcome, for logs now and metrics later
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(PATH, self._handle)
        app.router.add_get(METRICS_PATH, _metrics)
        self._runner = web.AppRunner(app, access_log=None)
        self.address = ""

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.address = f"{self._host}:{port}"
        if not self._secrets:
            log.warning("METER_STRIPE_WEBHOOK_SECRET is not set: webhooks are answered 503 until it is")

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        if not self._secrets:
            return self._answer(Outcome(503, "retry", "no webhook secret configured"), "-", "-")
        payload = await request.read()
        try:
            event = verified_event(payload, request.headers.get("Stripe-Signature"), self._secrets)
        except NotAnEvent as refused:
            return self._answer(Outcome(400, "refused", str(refused)), "-", "-")
        source = WebhookEvent(event["id"], event["type"], payload, datetime.now(UTC))
        outcome = await forward(self._client, action_for(event), source)
        return self._answer(outcome, event["id"], event["type"])

    def _answer(self, outcome: Outcome, event_id: str, event_type: str) -> web.Response:
        self.outcomes[outcome.status] += 1
        level = logging.WARNING if outcome.status in ("rejected", "retry", "refused") else logging.INFO
        log.log(level, "webhook %s %s: %s %s", event_id, event_type, outcome.status, outcome.reason)
        body = {"status": outcome.status, "reason": outcome.reason}
        return web.json_response(body, status=outcome.http_status)


async def replay(client: MeterClient, event_id: str) -> Outcome:
    """Run a stored event through the adapter again (after fixing what made it rejected). An
    event that was applied or ignored is not applied again."""
    try:
        stored = await client.get_webhook_event(event_id=event_id)
    except MeterRpcError as error:
        return Outcome(404 if error.reason == "EVENT_NOT_FOUND" else 503, "retry", error.message)
    payload = stored.event.payload
    event = json.loads(payload)
    source = WebhookEvent(stored.event.event_id, stored.event.type, payload, stored.event.received_time.ToDatetime(UTC))
    return await forward(client, action_for(event), source)
