"""Signature verification of Stripe webhooks, with the stripe library (several secrets accepted
while one is being rotated).

The library refuses a signature older than the tolerance but accepts one dated any time ahead: a
captured or forged-clock delivery dated next year would stay replayable until then. So a
timestamp more than the tolerance ahead of this clock is refused too.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any

import stripe

from meter.domain.amounts import INT64_MAX
from meter.domain.digits import whole_number

TOLERANCE_SECONDS = 300
_STRIPE_ID = re.compile(r"[!-~]{1,128}")


class NotAnEvent(ValueError):
    """The request is not an authentic Stripe event: answer 400 and store nothing."""


def verified_event(
    payload: bytes, signature: str | None, secrets: Sequence[str], now: float | None = None
) -> dict[str, Any]:
    """The event, if `signature` proves `payload` came from Stripe with one of `secrets` within
    the tolerance either way of `now`; raises NotAnEvent otherwise."""
    if not signature:
        raise NotAnEvent("missing Stripe-Signature header")
    if _signed_at(signature) > (time.time() if now is None else now) + TOLERANCE_SECONDS:
        raise NotAnEvent("signature is dated in the future")
    try:
        payload.decode("utf-8")  # the stripe library decodes it, and raises on bytes that are not UTF-8
    except UnicodeDecodeError as exc:
        raise NotAnEvent("body is not UTF-8 JSON") from exc
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, signature, secret, tolerance=TOLERANCE_SECONDS)
            break
        except stripe.SignatureVerificationError:
            continue
    else:
        raise NotAnEvent("signature does not match any configured secret, or is stale")
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotAnEvent("body is not JSON") from exc
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and _STRIPE_ID.fullmatch(event["id"])
        and isinstance(event.get("type"), str)
        and _STRIPE_ID.fullmatch(event["type"])
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
    ):
        # Stripe's ids and types are short printable ASCII: anything else cannot be stored as an
        # event (its id is the key it is stored under), so nothing is.
        raise NotAnEvent("body is not a Stripe event")
    return event


def _signed_at(signature: str) -> int:
    """The header's `t=` (Stripe's format: `t=1700000000,v1=...`); 0 when absent or not a number,
    which the library then refuses as stale."""
    for item in signature.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and (signed_at := whole_number(value, INT64_MAX)) is not None:
            return signed_at
    return 0
