"""Balance events sent out as webhooks, signed per the Standard Webhooks specification (the
`standardwebhooks` library signs: `webhook-id` is the event's id, the same on every redelivery;
`webhook-timestamp` the time of sending; `webhook-signature` v1 HMAC-SHA256 with the endpoint's
secret). The body is `{"type", "timestamp", "data"}`, `data` the event as ListEvents shows it in
JSON (proto3 JSON: 64-bit numbers are strings), except that the fact's own fields (`data.data`)
are as recorded, their amounts whole JSON numbers.

What meter takes from an answer is bounded: its status, its headers (aiohttp's limits: 128 of
them, 8 kB a line) and, of a body that is not a 2xx's, at most ERROR_BODY_BYTES for the attempt's
error; then the connection is closed, whatever is left unread. A redirect is not followed (a
302 would become a GET and lose the event, a 307 would post the signed body wherever the receiver
names): it is a failed attempt whose error shows where it pointed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import aiohttp
from google.protobuf.json_format import MessageToDict
from standardwebhooks import Webhook
from yarl import URL

from meter.domain.balance_events import BalanceEvent
from meter.domain.urls import shown_url
from meter.domain.webhook_deliveries import DELIVERED, Attempt, Delivery, Outcome
from meter.grpc import convert

USER_AGENT = "meter-webhooks/1"
MAX_ERROR_LENGTH = 500
ERROR_BODY_BYTES = 256  # of an answer that is not a 2xx: enough to tell what the receiver said


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
    """One HTTP session per process, with a connection for each send the deliverer may have in
    flight (none waits for another's); a send says how the attempt ended."""

    def __init__(self, timeout_seconds: float, connections: int) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, delivery: Delivery) -> Attempt:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections)
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        payload = body(delivery.event)
        headers = signed_headers(delivery, payload, datetime.now(UTC))
        try:
            url, credentials = _credentials_apart(delivery.url)
            async with self._session.post(
                url, data=payload.encode(), headers=headers | credentials, allow_redirects=False
            ) as answer:
                if 200 <= answer.status < 300:
                    return DELIVERED  # its body is not read: nothing in it changes the outcome
                try:
                    return await _refusal(answer)
                finally:
                    answer.close()  # the rest of the body is left unread: drop the connection
        except TimeoutError:
            return Attempt(Outcome.TIMED_OUT, f"no answer within {self._timeout.total} s")
        except (aiohttp.ClientError, ValueError) as error:
            return Attempt(Outcome.FAILED, _cut(f"{type(error).__name__}: {error}"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _credentials_apart(url: str) -> tuple[URL, dict[str, str]]:
    """An endpoint stored with `user:password@` (before they were refused) sends them as an
    Authorization header, so that no URL aiohttp may put in an error carries them."""
    parsed = URL(url)
    if parsed.user is None and parsed.password is None:
        return parsed, {}
    return parsed.with_user(None), {
        "authorization": aiohttp.encode_basic_auth(parsed.user or "", parsed.password or "")
    }


async def _refusal(answer: aiohttp.ClientResponse) -> Attempt:
    """A failed attempt's outcome and error: the status, where a redirect pointed, and the start
    of the body (at most ERROR_BODY_BYTES of it are read)."""
    status = f"HTTP {answer.status}"
    if 300 <= answer.status < 400:
        location = answer.headers.get("Location")
        where = f"to {shown_url(location)}" if location else "without a Location"
        return Attempt(Outcome.FAILED, _cut(f"{status}: redirect {where} not followed"))
    excerpt = b""
    while len(excerpt) < ERROR_BODY_BYTES:
        chunk = await answer.content.read(ERROR_BODY_BYTES - len(excerpt))
        if not chunk:
            break
        excerpt += chunk
    text = excerpt.decode("utf-8", errors="replace")
    error = _cut(f"{status}: {' '.join(text.split())}" if text.strip() else status)
    return Attempt(Outcome.GONE if answer.status == 410 else Outcome.FAILED, error)


def _cut(text: str) -> str:
    """One printable line of at most MAX_ERROR_LENGTH characters (an error is logged and listed)."""
    line = "".join(c if c.isprintable() else "?" for c in text)
    return line if len(line) <= MAX_ERROR_LENGTH else line[: MAX_ERROR_LENGTH - 1] + "…"
