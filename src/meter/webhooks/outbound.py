"""Balance events sent out as webhooks, signed per the Standard Webhooks specification (the
`standardwebhooks` library signs: `webhook-id` is the event's id, the same on every redelivery;
`webhook-timestamp` the time of sending; `webhook-signature` v1 HMAC-SHA256 with the endpoint's
secret). The body is `{"type", "timestamp", "data"}`, `data` the event as ListEvents shows it in
JSON (proto3 JSON: 64-bit numbers are strings), except that the fact's own fields (`data.data`)
are as recorded, their amounts whole JSON numbers."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import aiohttp
from google.protobuf.json_format import MessageToDict
from standardwebhooks import Webhook

from meter.domain.balance_events import BalanceEvent
from meter.domain.webhook_deliveries import Delivery
from meter.grpc import convert

USER_AGENT = "meter-webhooks/1"
MAX_ERROR_LENGTH = 500


def body(event: BalanceEvent) -> str:
    data = MessageToDict(convert.balance_event(event), preserving_proto_field_name=True)
    data["data"] = event.data  # as recorded: whole numbers stay whole (a Struct would make them 1000.0)
    timestamp = event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"type": event.type, "timestamp": timestamp, "data": data}, separators=(",", ":"))


def signed_headers(delivery: Delivery, payload: str, sent_at: datetime) -> dict[str, str]:
    signature = Webhook(delivery.secret).sign(delivery.event.event_id, sent_at, payload)
    return {
        "webhook-id": delivery.event.event_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


class SignedSender:
    """One HTTP session per process; a send returns None on a 2xx, else what went wrong."""

    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, delivery: Delivery) -> str | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        payload = body(delivery.event)
        headers = signed_headers(delivery, payload, datetime.now(UTC))
        try:
            async with self._session.post(delivery.url, data=payload.encode(), headers=headers) as answer:
                if 200 <= answer.status < 300:
                    return None
                text = (await answer.text(errors="replace"))[:200]
                return f"HTTP {answer.status}: {text}"[:MAX_ERROR_LENGTH]
        except TimeoutError:
            return f"no answer within {self._timeout.total} s"
        except aiohttp.ClientError as error:
            return f"{type(error).__name__}: {error}"[:MAX_ERROR_LENGTH]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
