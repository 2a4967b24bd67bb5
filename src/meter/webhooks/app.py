"""POST /webhooks/stripe on aiohttp: read the raw body, verify, map, forward, answer. The same
server answers GET /metrics (Prometheus text format) and GET /healthz (200 once meter is ready
to serve, 503 before: what a container's health check or an HTTP probe asks)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from meter import health_probe, metrics
from meter.client import MeterClient, MeterRpcError, event_status
from meter.domain.events import WebhookEvent
from meter.listeners import LimitedSite, ListenerLimits, aiohttp_options
from meter.webhooks.forward import Outcome, forward
from meter.webhooks.mapping import action_for
from meter.webhooks.reconcile import Schedule
from meter.webhooks.verify import NotAnEvent, verified_event

log = logging.getLogger(__name__)

PATH = "/webhooks/stripe"
METRICS_PATH = "/metrics"
HEALTH_PATH = health_probe.HEALTH_PATH
REQUEST_ID = "X-Request-Id"
MAX_BODY_BYTES = 1_000_000  # Stripe events are a few kB; aiohttp answers 413 above this
LISTENER = "webhooks"  # as meter_listener_refusals names it


async def _metrics(request: web.Request) -> web.Response:
    """The process's Prometheus metrics (prometheus_client's default registry), text format."""
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


class WebhookServer:
    """The adapter's HTTP server, a gRPC client of meter at `client`'s target."""

    def __init__(
        self,
        client: MeterClient,
        secrets: Sequence[str],
        address: str,
        limits: ListenerLimits,
        serving: Callable[[], bool] = lambda: True,
        reconciling: Schedule | None = None,
    ) -> None:
        self._client = client
        self.reconciling = reconciling
        self._reconciler: asyncio.Task[None] | None = None
        self._limits = limits
        self._secrets = tuple(secrets)
        self._serving = serving
        host, _, port = address.rpartition(":")
        self._host, self._port = host or "127.0.0.1", int(port)
        self.outcomes: Counter[str] = Counter()  # events by outcome in this process (tests read it)
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(PATH, self._handle)
        app.router.add_get(METRICS_PATH, _metrics)
        app.router.add_get(HEALTH_PATH, self._health)
        self._runner = web.AppRunner(app, access_log=None, **aiohttp_options(limits))
        self.address = ""

    async def start(self) -> None:
        await self._runner.setup()
        site = LimitedSite(self._runner, self._host, self._port, self._limits, LISTENER)
        await site.start()
        port = self._runner.addresses[0][1]
        self.address = f"{self._host}:{port}"
        if not self._secrets:
            log.warning("METER_STRIPE_WEBHOOK_SECRET is not set: webhooks are answered 503 until it is")
        if self.reconciling is not None:
            self._reconciler = asyncio.create_task(self.reconciling.every(self._client))

    async def stop(self) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
        if self.reconciling is not None:
            await self.reconciling.stripe_api.close()
        await self._runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        serving = self._serving()
        return web.json_response({"status": "SERVING" if serving else "NOT_SERVING"}, status=200 if serving else 503)

    async def _handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        request_id = os.urandom(12).hex()
        if not self._secrets:
            return self._answer(Outcome(503, "retry", "no webhook secret configured"), None, started, request_id)
        try:
            # Without a bound, a client trickling its body would hold a connection for ever.
            async with asyncio.timeout(self._limits.body_timeout_seconds):
                payload = await request.read()
        except TimeoutError:
            return self._answer(Outcome(408, "refused", "the body took too long to arrive"), None, started, request_id)
        try:
            event = verified_event(payload, request.headers.get("Stripe-Signature"), self._secrets)
        except NotAnEvent as refused:
            return self._answer(Outcome(400, "refused", str(refused)), None, started, request_id)
        source = WebhookEvent(event["id"], event["type"], payload, datetime.now(UTC))
        action = action_for(event)
        outcome = await forward(self._client, action, source)
        return self._answer(outcome, source, started, request_id, getattr(action, "account_id", "") or "")

    def _answer(
        self, outcome: Outcome, event: WebhookEvent | None, started: float, request_id: str, account: str = ""
    ) -> web.Response:
        """One log line and one count per delivery; the request id goes back as X-Request-Id."""
        self.outcomes[outcome.status] += 1
        event_type = event.type if event else "-"
        metrics.WEBHOOK_EVENTS.labels(event_type, outcome.status).inc()
        latency_ms = (time.perf_counter() - started) * 1000
        level = logging.WARNING if outcome.status in ("rejected", "retry", "refused") else logging.INFO
        log.log(
            level,
            "webhook %s %s: %s %s",
            event.event_id if event else "-",
            event_type,
            outcome.status,
            outcome.reason,
            extra={
                "fields": {
                    "method": "POST " + PATH,
                    "event": event.event_id if event else "",
                    "type": event_type,
                    "caller": "stripe",
                    "account": account,
                    "status": outcome.status,
                    "http_status": outcome.http_status,
                    "reason": outcome.reason,
                    "latency_ms": round(latency_ms, 3),
                    "request_id": request_id,
                }
            },
        )
        body = {"status": outcome.status, "reason": outcome.reason, "request_id": request_id}
        return web.json_response(body, status=outcome.http_status, headers={REQUEST_ID: request_id})


async def replay(client: MeterClient, event_id: str) -> Outcome:
    """Run a stored event through the adapter again (after fixing what made it rejected). An
    event that was applied or ignored is not applied again. An event whose payload the retention
    deleted cannot be: there is nothing left to map (status "pruned")."""
    try:
        stored = await client.get_webhook_event(event_id=event_id)
    except MeterRpcError as error:
        return Outcome(404 if error.reason == "EVENT_NOT_FOUND" else 503, "retry", error.message)
    payload = stored.event.payload
    if not payload:
        # Every event the adapter stores has its verified body (JSON, never empty): empty is pruned.
        was = event_status(stored.status)
        return Outcome(
            410,
            "pruned",
            "(its payload was deleted after the retention window, METER_WEBHOOK_PAYLOAD_RETENTION_DAYS; "
            f"the event was {was.value if was else 'stored'} and cannot be replayed)",
        )
    event = json.loads(payload)
    source = WebhookEvent(stored.event.event_id, stored.event.type, payload, stored.event.received_time.ToDatetime(UTC))
    return await forward(client, action_for(event), source)
