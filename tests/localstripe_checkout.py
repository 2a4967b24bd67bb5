"""localstripe, plus the Stripe Checkout Sessions it lacks, as a real Stripe API emulator for tests.

localstripe (PyPI `localstripe`, https://github.com/adrienverge/localstripe) is a stateful fake
Stripe server: customers, payment methods, payment intents, charges, refunds, subscriptions,
invoices, events and signed webhooks. It ships no Checkout Sessions, which meter creates to sell
token packs. This module adds them as a thin layer over localstripe's own machinery: a session is a
localstripe StripeObject in localstripe's store, paying it creates and confirms a real localstripe
PaymentIntent with a real localstripe PaymentMethod, and its events go out through localstripe's
Event and schedule_webhook (so they are signed with the secret registered at /_config/webhooks/{id}).

Added here, and nothing else:
- Idempotency-Key on every POST, as Stripe honours it (localstripe ignores it);
- POST /v1/checkout/sessions (mode=payment with price_data line items), GET
  /v1/checkout/sessions/{id}, POST /v1/checkout/sessions/{id}/expire (sends checkout.session.expired);
- POST /_test/checkout/sessions/{id}/pay [card=<number>]: stands in for the customer paying on the
  hosted page; then the session is complete and paid, and checkout.session.completed is sent;
- charge.refunded after POST /v1/refunds (localstripe records the refund but sends no event);
- GET /v1/events with `types` (localstripe filters by one `type` only);
- localstripe's store is never written to disk (it pickles itself to /tmp/localstripe.pickle on
  every change, and loads it back unless --from-scratch): every run starts from scratch.

Run: `python tests/localstripe_checkout.py --port 8420`; tests start it with `stripe_emulator.py`.
Calls need `Authorization: Bearer sk_...` (any key), except /_config/ ones.

Licence: localstripe is GPL-3.0-or-later (c) Adrien Vergé. It is a test-only dependency (the `dev`
extra) that this module imports and runs; none of its code is copied into this repository.
"""

from __future__ import annotations

import argparse
import logging
import socket
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from localstripe import server
from localstripe.errors import UserError
from localstripe.resources import (
    Charge,
    Event,
    PaymentIntent,
    PaymentMethod,
    Refund,
    StripeObject,
    store,
    try_convert_to_int,
)
from localstripe.webhooks import schedule_webhook

DEFAULT_CARD = "4242424242424242"
MIN_EXPIRY, MAX_EXPIRY = 30 * 60, 24 * 60 * 60  # Stripe's bounds on expires_at, from creation


def _bad(message: str) -> UserError:
    return UserError(400, message)


def _metadata(value: object, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _bad(f"Invalid object: {name} must be a hash of strings")
    return dict(value)


def _line_item(item: object) -> tuple[int, str]:
    """A line item's total and currency. Only `quantity` with `price_data` is emulated."""
    if not isinstance(item, dict) or set(item) - {"quantity", "price_data"}:
        raise _bad("line_items: only quantity and price_data are emulated")
    quantity = try_convert_to_int(item.get("quantity"))
    price = item.get("price_data")
    if not isinstance(price, dict) or set(price) - {"currency", "unit_amount", "product_data"}:
        raise _bad("line_items[].price_data: only currency, unit_amount and product_data are emulated")
    unit_amount = try_convert_to_int(price.get("unit_amount"))
    currency = price.get("currency")
    product = price.get("product_data")
    if not isinstance(quantity, int) or quantity < 1:
        raise _bad("line_items[].quantity must be a positive integer")
    if not isinstance(unit_amount, int) or unit_amount < 0:
        raise _bad("line_items[].price_data.unit_amount must be a non-negative integer")
    if not isinstance(currency, str) or not currency:
        raise _bad("Missing required param: line_items[].price_data.currency")
    if not isinstance(product, dict) or not product.get("name"):
        raise _bad("Missing required param: line_items[].price_data.product_data.name")
    return quantity * unit_amount, currency.lower()


class CheckoutSession(StripeObject):
    """A Checkout Session in mode=payment. Public attributes and properties are its API fields
    (localstripe's _export turns them into JSON), so every helper here starts with `_`."""

    object = "checkout.session"
    _id_prefix = "cs_test_"

    def __init__(
        self,
        mode: str | None = None,
        line_items: Any = None,
        success_url: str | None = None,
        cancel_url: str | None = None,
        client_reference_id: str | None = None,
        customer_email: str | None = None,
        expires_at: Any = None,
        metadata: Any = None,
        payment_intent_data: Any = None,
        payment_method_types: Any = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise _bad("Received unknown parameter: " + ", ".join(unknown))
        if mode != "payment":
            raise _bad("Only mode=payment is emulated")
        if not isinstance(line_items, list) or not line_items:
            raise _bad("Missing required param: line_items")
        totals = [_line_item(item) for item in line_items]
        currencies = {currency for _, currency in totals}
        if len(currencies) != 1:
            raise _bad("All line_items must use the same currency")
        now = int(time.time())
        expires = try_convert_to_int(expires_at if expires_at is not None else now + MAX_EXPIRY)
        if not isinstance(expires, int) or not now + MIN_EXPIRY <= expires <= now + MAX_EXPIRY:
            raise _bad("expires_at must be between 30 minutes and 24 hours after the session's creation")
        intent_data: Any = payment_intent_data if payment_intent_data is not None else {}
        if not isinstance(intent_data, dict) or set(intent_data) - {"metadata"}:
            raise _bad("payment_intent_data: only metadata is emulated")
        session_metadata = _metadata(metadata, "metadata")
        intent_metadata = _metadata(intent_data.get("metadata"), "payment_intent_data[metadata]")
        # All exceptions must be raised before this point (the base class stores the object).
        super().__init__()
        self.mode = mode
        self.status = "open"
        self.payment_status = "unpaid"
        self.amount_subtotal = self.amount_total = sum(amount for amount, _ in totals)
        self.currency = currencies.pop()
        self.client_reference_id = client_reference_id
        self.customer = None
        self.customer_email = customer_email
        self.expires_at = expires
        self.metadata = session_metadata
        self.payment_intent: str | None = None
        self.payment_method_types = payment_method_types or ["card"]
        self.success_url = success_url
        self.cancel_url = cancel_url
        self._intent_metadata = intent_metadata
        self._url: str | None = None

    @property
    def url(self) -> str | None:
        """The hosted page: Stripe gives it only while the session is open."""
        return self._url if self.status == "open" else None

    def _require_open(self) -> None:
        if self.status != "open":
            raise _bad(f"Checkout Session {self.id} is {self.status}, not open")

    @classmethod
    def _api_update(cls, id: str, **data: Any) -> CheckoutSession:
        raise UserError(405, "Method Not Allowed")

    @classmethod
    def _api_delete(cls, id: str) -> CheckoutSession:
        raise UserError(405, "Method Not Allowed")

    @classmethod
    def _api_expire(cls, id: str, **unknown: Any) -> CheckoutSession:
        if unknown:
            raise _bad("Received unknown parameter: " + ", ".join(unknown))
        session = cls._api_retrieve(id)
        session._require_open()
        session.status = "expired"
        schedule_webhook(Event("checkout.session.expired", session))
        return session

    def _pay(self, card: str) -> None:
        """What the customer paying on the hosted page causes: a PaymentIntent paid with the card
        (a declined card raises localstripe's 402 and leaves the session open), then the session
        complete and paid, and checkout.session.completed."""
        self._require_open()
        method = PaymentMethod(
            type="card",
            card={"number": card, "exp_month": "12", "exp_year": str(time.gmtime().tm_year + 5), "cvc": "123"},
        )
        intent = PaymentIntent._api_create(
            amount=self.amount_total,
            currency=self.currency,
            payment_method=method.id,
            metadata=dict(self._intent_metadata),
            confirm=True,
        )
        if intent.status != "succeeded":
            raise UserError(402, f"PaymentIntent {intent.id} is {intent.status}: the emulated page only pays outright")
        self.status, self.payment_status, self.payment_intent = "complete", "paid", intent.id
        schedule_webhook(Event("checkout.session.completed", self))


# Idempotency-Key -> (the first request's path and parameters, its status and body), as Stripe
# keeps them for every POST.
_idempotent: dict[str, tuple[str, dict[str, Any], int, bytes]] = {}


@web.middleware
async def _idempotency(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Stripe's Idempotency-Key on every POST: a retry with the same key and parameters gets the
    first answer again (`Idempotent-Replayed: true`), other parameters an idempotency_error. An
    error answer is not kept (Stripe keeps those too; the tests never retry one)."""
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or key is None or not request.path.startswith("/v1/"):
        return await handler(request)
    params = dict(await server.get_post_data(request) or {})
    if key in _idempotent:
        path, first_params, status, body = _idempotent[key]
        if (path, first_params) != (request.path, params):
            error = UserError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they were "
                f"first used with. Try using a key other than '{key}' if you meant to execute a different request.",
            )
            error.body["error"]["type"] = "idempotency_error"
            raise error
        replayed = web.Response(status=status, body=body, content_type="application/json")
        replayed.headers["Idempotent-Replayed"] = "true"
        return replayed
    response = await handler(request)
    if isinstance(response, web.Response) and response.status < 300 and isinstance(response.body, bytes):
        _idempotent[key] = (request.path, params, response.status, response.body)
    return response


async def _create(request: web.Request) -> web.Response:
    data = dict(await server.get_post_data(request) or {})
    expand = data.pop("expand", None)
    session = CheckoutSession(**data)
    session._url = f"{request.url.origin()}/checkout/{session.id}"
    return server.json_response(session._export(expand=expand))


async def _retrieve(request: web.Request) -> web.Response:
    expand = server.unflatten_data(request.query).get("expand")
    return server.json_response(CheckoutSession._api_retrieve(request.match_info["id"])._export(expand=expand))


async def _pay(request: web.Request) -> web.Response:
    session = CheckoutSession._api_retrieve(request.match_info["id"])
    data = await server.get_post_data(request) or {}
    session._pay(str(data.get("card", DEFAULT_CARD)))
    return server.json_response(session._export())


_create_refund = Refund._api_create


def _refund_and_announce(cls: type[Refund], /, **data: Any) -> Refund:
    """localstripe's refund, then the charge.refunded event Stripe sends (the charge as refunded)."""
    refund = _create_refund(**data)
    schedule_webhook(Event("charge.refunded", Charge._api_retrieve(refund.charge)))
    return refund


_list_events = Event._api_list_all


def _events_of_types(cls: type[Event], url: str, types: list[str] | None = None, **data: Any) -> Any:
    """GET /v1/events with Stripe's `types` (any of these, at most 20), which localstripe lacks."""
    listed = _list_events(url, **data)
    if types is not None:
        if not isinstance(types, list) or not 1 <= len(types) <= 20:
            raise _bad("types: a list of 1 to 20 event types")
        listed._list = [event for event in listed._list if event.type in types]
    return listed


def extend_localstripe() -> web.Application:
    """localstripe's app with the additions above, its store kept in memory only. Call once, before
    the app starts."""
    store.dump_to_disk = lambda: None  # every write, and every POST, would pickle the store to /tmp
    Refund._api_create = classmethod(_refund_and_announce)
    Event._api_list_all = classmethod(_events_of_types)
    app: web.Application = server.app
    app.middlewares.append(_idempotency)  # inside localstripe's own: its errors answer as Stripe's do
    app.router.add_post("/v1/checkout/sessions", _create)
    app.router.add_get("/v1/checkout/sessions/{id}", _retrieve)
    url = "/v1/checkout/sessions/{id}/expire"
    app.router.add_post(url, server.api_extra(CheckoutSession._api_expire, url))
    app.router.add_post("/_test/checkout/sessions/{id}/pay", _pay)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--fd", type=int, help="serve on this inherited, bound socket instead")
    args = parser.parse_args(argv)
    # Access lines and localstripe's webhook delivery reports ("webhook ... delivered") to stderr.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = extend_localstripe()
    sock = socket.socket(fileno=args.fd) if args.fd is not None else socket.create_server((args.host, args.port))
    web.run_app(app, sock=sock, print=None)


if __name__ == "__main__":
    main()
