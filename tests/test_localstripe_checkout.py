"""The Stripe emulator on its own (no meter): stripe-python creates Checkout Sessions as meter does,
the emulator pays, expires and refunds them, and the webhooks arrive signed as Stripe signs them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import stripe
from aiohttp import web
from stripe.params.checkout import SessionCreateParams
from stripe_emulator import DECLINED_CARD, EmulatorError, StripeEmulator, running_emulator

SECRET = "whsec_test_emulator_self_test"
ACCOUNT = "acct-emulator-1"
METADATA = {
    "type": "token_pack_purchase",
    "account_id": ACCOUNT,
    "pack_id": "pack_100k",
    "tokens": "100000",
    "catalog_version": "2026-11-30.1",
    "request_id": "req-1",
}


@dataclass
class Inbox:
    """A webhook endpoint that keeps every request's body and Stripe-Signature header."""

    url: str = ""
    received: list[tuple[bytes, str]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((await request.read(), request.headers.get("Stripe-Signature", "")))
        self.arrived.set()
        return web.Response()

    async def event(self, event_type: str, object_id: str, timeout: float = 10.0) -> stripe.Event:
        """The first `event_type` event about `object_id`, its signature verified; waits for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.arrived.clear()
            for payload, signature in self.received:
                body = json.loads(payload)
                if body["type"] == event_type and body["data"]["object"]["id"] == object_id:
                    event: stripe.Event = stripe.Webhook.construct_event(payload, signature, SECRET)
                    return event
            try:
                await asyncio.wait_for(self.arrived.wait(), deadline - loop.time())
            except TimeoutError:
                pytest.fail(f"no {event_type} webhook for {object_id} within {timeout} s")


@pytest.fixture(scope="module")
async def inbox() -> AsyncIterator[Inbox]:
    inbox = Inbox()
    app = web.Application()
    app.router.add_post("/stripe", inbox.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    inbox.url = f"http://127.0.0.1:{runner.addresses[0][1]}/stripe"
    yield inbox
    await runner.cleanup()


@pytest.fixture(scope="module")
async def emulator(inbox: Inbox, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[StripeEmulator]:
    log_path = Path(tmp_path_factory.mktemp("localstripe")) / "server.log"
    async with running_emulator(log_path=log_path) as emulator:
        await emulator.register_webhook(inbox.url, SECRET)
        yield emulator


def session_params(request_id: str = "req-1", unit_amount: int = 900) -> SessionCreateParams:
    metadata = METADATA | {"request_id": request_id}
    return {
        "mode": "payment",
        "client_reference_id": ACCOUNT,
        "success_url": "https://example.com/ok",
        "cancel_url": "https://example.com/cancel",
        "expires_at": int(time.time()) + 3600,
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": "usd",
                    "unit_amount": unit_amount,
                    "product_data": {"name": "100 000 tokens"},
                },
            }
        ],
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
    }


def data_object(event: stripe.Event) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(json.dumps(event.data.object.to_dict()))
    return obj


async def test_pay_a_session_then_refund_it(emulator: StripeEmulator, inbox: Inbox) -> None:
    client = emulator.stripe_client()
    params = session_params()
    key = f"meter-checkout:{ACCOUNT}:req-1"
    session = await client.v1.checkout.sessions.create_async(params=params, options={"idempotency_key": key})
    assert session.id.startswith("cs_test_")
    assert (session.status, session.payment_status, session.payment_intent) == ("open", "unpaid", None)
    assert (session.amount_total, session.currency, session.expires_at) == (900, "usd", params["expires_at"])
    assert session.url == f"{emulator.url}/checkout/{session.id}"

    again = await client.v1.checkout.sessions.create_async(params=params, options={"idempotency_key": key})
    assert again.id == session.id
    with pytest.raises(stripe.IdempotencyError):
        await client.v1.checkout.sessions.create_async(
            params=session_params(unit_amount=1900), options={"idempotency_key": key}
        )

    fetched = await client.v1.checkout.sessions.retrieve_async(session.id)
    assert fetched.metadata is not None and fetched.metadata.to_dict() == METADATA
    assert fetched.client_reference_id == ACCOUNT

    paid = await emulator.pay(session.id)
    assert (paid["status"], paid["payment_status"]) == ("complete", "paid")

    completed = await inbox.event("checkout.session.completed", session.id)
    obj = data_object(completed)
    assert isinstance(completed.data.object, stripe.checkout.Session)
    assert obj["object"] == "checkout.session"
    assert (obj["status"], obj["payment_status"], obj["mode"]) == ("complete", "paid", "payment")
    assert (obj["amount_total"], obj["currency"], obj["client_reference_id"]) == (900, "usd", ACCOUNT)
    assert obj["metadata"] == METADATA
    assert obj["payment_intent"] == paid["payment_intent"] and obj["payment_intent"].startswith("pi_")
    assert obj["expires_at"] == params["expires_at"] and obj["created"] == session.created
    assert "url" in obj  # null once the session is complete, as in Stripe

    intent = await client.v1.payment_intents.retrieve_async(obj["payment_intent"])
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", 900, "usd")
    assert intent.metadata.to_dict() == METADATA

    refund = await emulator.refund(intent.id, amount=400)
    assert (refund["status"], refund["amount"]) == ("succeeded", 400)
    refunded = data_object(await inbox.event("charge.refunded", refund["charge"]))
    assert (refunded["payment_intent"], refunded["amount_refunded"], refunded["refunded"]) == (intent.id, 400, False)


async def test_a_declined_card_leaves_the_session_open(emulator: StripeEmulator) -> None:
    client = emulator.stripe_client()
    session = await client.v1.checkout.sessions.create_async(params=session_params("req-2"))
    with pytest.raises(EmulatorError) as declined:
        await emulator.pay(session.id, card=DECLINED_CARD)
    assert declined.value.status == 402
    still = await client.v1.checkout.sessions.retrieve_async(session.id)
    assert (still.status, still.payment_status, still.payment_intent) == ("open", "unpaid", None)


async def test_expire_a_session(emulator: StripeEmulator, inbox: Inbox) -> None:
    client = emulator.stripe_client()
    session = await client.v1.checkout.sessions.create_async(params=session_params("req-3"))
    expired = await client.v1.checkout.sessions.expire_async(session.id)
    assert (expired.status, expired.payment_status, expired.url) == ("expired", "unpaid", None)
    obj = data_object(await inbox.event("checkout.session.expired", session.id))
    assert (obj["status"], obj["metadata"]) == ("expired", METADATA | {"request_id": "req-3"})
    with pytest.raises(EmulatorError) as not_open:
        await emulator.pay(session.id)
    assert not_open.value.status == 400


async def test_expires_at_must_be_within_stripes_bounds(emulator: StripeEmulator) -> None:
    client = emulator.stripe_client()
    too_soon = session_params("req-4")
    too_soon["expires_at"] = int(time.time()) + 60
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.checkout.sessions.create_async(params=too_soon)
