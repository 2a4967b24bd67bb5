"""Stripe's API through stripe-python: the one place meter calls it. Checkout Sessions, the
refunds support asks for (of payments meter refused to credit), and the events `meter reconcile`
lists (what Stripe says happened, whether or not its webhook reached meter).

A session sells one pack as the catalog priced it: the price and currency on its line item (so
the customer pays exactly what meter will credit), and the pack, its tokens, the catalog version
and the request in the metadata of both the session and its PaymentIntent (what the webhook and a
later refund read). Stripe's idempotency key is derived from the account and the caller's
request_id: a retry after a lost answer gets the session Stripe already made, not a second one. A
refused purchase's refund is keyed by its payment: however often support asks, Stripe refunds once.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import stripe

from meter.domain.checkout import TOKEN_PACK_PURCHASE, CheckoutOrder, CreatedSession
from meter.domain.errors import StripeRefused, StripeUnavailable

# stripe-python retries connection failures and 5xx (safe: every create carries an idempotency key).
NETWORK_RETRIES = 2
TIMEOUT_SECONDS = 20.0


# The metadata `type` of the refunds meter asks for (of payments it refused to credit).
REFUSED_PURCHASE_REFUND = "refused_purchase_refund"


def idempotency_key(purpose: str, account_id: str, ref: str) -> str:
    """Stripe keys are at most 255 characters; an account id and a request id can be longer."""
    digest = hashlib.sha256(f"{account_id}\x00{ref}".encode()).hexdigest()
    return f"meter-{purpose}-{digest}"


@contextmanager
def _answered() -> Iterator[None]:
    """Stripe's failures as meter's: unreachable or failing itself (a retry can pass), or refusing
    the request, the key or the account (retrying will not help)."""
    try:
        yield
    except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as error:
        raise StripeUnavailable(_detail(error)) from error
    except stripe.StripeError as error:
        raise StripeRefused(error.code or type(error).__name__, _detail(error)) from error


def session_params(order: CheckoutOrder, expires_at: datetime) -> dict[str, Any]:
    sold = order.sold
    metadata = {
        "type": TOKEN_PACK_PURCHASE,
        "account_id": order.account_id,
        "pack_id": sold.pack_id,
        "tokens": str(sold.tokens),
        "catalog_version": sold.catalog_version,
        "request_id": order.request_id,
    }
    return {
        "mode": "payment",
        "client_reference_id": order.account_id,
        "success_url": order.success_url,
        "cancel_url": order.cancel_url,
        "expires_at": int(expires_at.timestamp()),
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": sold.currency,
                    "unit_amount": sold.price_minor,
                    "product_data": {"name": order.name},
                },
            }
        ],
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
    }


class StripeApi:
    """meter's StripeProvider: Stripe's API (or an emulator at `api_base`)."""

    def __init__(self, api_key: str, api_base: str | None = None) -> None:
        self._http = stripe.AIOHTTPClient(timeout=TIMEOUT_SECONDS)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else {},
            http_client=self._http,
            max_network_retries=NETWORK_RETRIES,
        )

    async def create_session(self, order: CheckoutOrder, expires_at: datetime) -> CreatedSession:
        with _answered():
            session = await self._client.v1.checkout.sessions.create_async(
                params=session_params(order, expires_at),  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key("checkout", order.account_id, order.request_id)},
            )
        return CreatedSession(session.id, session.url or "")

    async def refund_refused(self, account_id: str, payment_ref: str, payment_intent: str) -> str:
        """A refund of all that is left of a refused purchase's payment; its id."""
        metadata = {"type": REFUSED_PURCHASE_REFUND, "account_id": account_id, "payment_ref": payment_ref}
        with _answered():
            refund = await self._client.v1.refunds.create_async(
                params={"payment_intent": payment_intent, "metadata": metadata},
                options={"idempotency_key": idempotency_key("refused-refund", account_id, payment_ref)},
            )
        return refund.id

    async def events(self, types: Sequence[str], since: datetime) -> AsyncIterator[dict[str, Any]]:
        """Stripe's events of these types created since `since` (Stripe keeps 30 days), newest
        first, each as its webhook would have carried it."""
        with _answered():
            page = await self._client.v1.events.list_async(
                params={"types": list(types), "created": {"gte": int(since.timestamp())}, "limit": 100}
            )
            async for event in page.auto_paging_iter():
                yield event.to_dict()

    async def close(self) -> None:
        await self._http.close_async()


def _detail(error: stripe.StripeError) -> str:
    return (error.user_message or str(error) or type(error).__name__)[:500]
