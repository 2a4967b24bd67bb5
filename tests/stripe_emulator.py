"""A running Stripe API emulator for tests: localstripe plus Checkout Sessions
(`localstripe_checkout.py`) in a subprocess, and what tests do to it that Stripe's API does not
offer: register a webhook endpoint, pay a session as the customer would, refund.

    async with running_emulator() as emulator:
        await emulator.register_webhook(meter.webhook_url, WEBHOOK_SECRET)
        stripe_api = emulator.url  # meter's Stripe base address
        ...
        await emulator.pay(session_id)  # -> checkout.session.completed, about 1 s later
        await emulator.refund(payment_intent_id)  # -> charge.refunded, about 1 s later
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import stripe

SERVER = Path(__file__).resolve().with_name("localstripe_checkout.py")
API_KEY = "sk_test_meter_emulator"  # localstripe takes any key that starts with sk_
DEFAULT_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000341"  # attaches, then the charge is declined (localstripe's list)


class EmulatorError(Exception):
    """The emulator answered a helper's call with an error."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"emulator answered {status}: {body}")
        self.status = status
        self.body = body


@dataclass
class StripeEmulator:
    url: str  # e.g. http://127.0.0.1:40123: the base address for the "api" of stripe-python
    log_path: Path  # the server's stderr: requests and webhook delivery reports
    api_key: str = API_KEY
    _process: asyncio.subprocess.Process | None = None
    _http: aiohttp.ClientSession | None = None
    _stripe_http_clients: list[stripe.AIOHTTPClient] = field(default_factory=list)
    _own_log: bool = False

    @classmethod
    async def start(cls, *, log_path: Path | None = None, timeout: float = 20.0) -> StripeEmulator:
        """Start the server on a free port and return once it answers (or raise, with its log)."""
        own_log = log_path is None
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="localstripe-checkout-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        # The socket is bound here and handed over, so the port cannot be taken in between;
        # connections made before the server is up wait in its backlog.
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        emulator = cls(url=f"http://127.0.0.1:{port}", log_path=log_path, _own_log=own_log)
        try:
            with listener, log_path.open("wb") as log:
                emulator._process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(SERVER),
                    "--fd",
                    str(listener.fileno()),
                    pass_fds=(listener.fileno(),),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            emulator._http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {emulator.api_key}"})
            await emulator._wait_until_up(timeout)
        except BaseException:
            await emulator.stop()
            raise
        return emulator

    async def _wait_until_up(self, timeout: float) -> None:
        assert self._process is not None and self._http is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._process.returncode is not None:
                raise RuntimeError(f"the emulator exited ({self._process.returncode}):\n{self.log()}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"the emulator did not answer within {timeout} s:\n{self.log()}")
            try:
                async with self._http.get(
                    f"{self.url}/v1/events", params={"limit": "1"}, timeout=aiohttp.ClientTimeout(total=remaining)
                ) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientConnectionError, TimeoutError):
                pass
            await asyncio.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stripe_client(self, *, max_network_retries: int = 2) -> stripe.StripeClient:
        """A stripe-python client for the emulator, made as meter makes its own (closed by stop)."""
        http_client = stripe.AIOHTTPClient()
        self._stripe_http_clients.append(http_client)
        return stripe.StripeClient(
            self.api_key,
            base_addresses={"api": self.url},
            http_client=http_client,
            max_network_retries=max_network_retries,
        )

    async def call(self, method: str, path: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """One call to the emulator, JSON in and out; an error status raises EmulatorError."""
        assert self._http is not None, "the emulator is not running"
        async with self._http.request(method, self.url + path, json=data) as response:
            body = await response.json(content_type=None) if response.content_length != 0 else {}
            if response.status >= 300:
                raise EmulatorError(response.status, body)
            return body or {}

    async def register_webhook(
        self, url: str, secret: str, *, events: Sequence[str] | None = None, webhook_id: str = "meter"
    ) -> None:
        """Send every later event (or only `events`) to `url`, signed with `secret` (Stripe-Signature).
        localstripe sends each event about 1 s after it happens, once, whatever the answer."""
        body: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            body["events"] = list(events)
        await self.call("POST", f"/_config/webhooks/{webhook_id}", body)

    async def unsold_session(self, account: str, *, pack_id: str, tokens: int, amount: int) -> Any:
        """A Checkout Session the product's own endpoint made (as the old system did), not meter:
        for `pack_id` and `tokens` at `amount` cents, which meter may not sell so. Unpaid."""
        return await self.stripe_client().v1.checkout.sessions.create_async(
            params={
                "mode": "payment",
                "success_url": "https://shop.example/bought",
                "cancel_url": "https://shop.example/pricing",
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {"currency": "usd", "unit_amount": amount, "product_data": {"name": pack_id}},
                    }
                ],
                "metadata": {
                    "type": "token_pack_purchase",
                    "account_id": account,
                    "pack_id": pack_id,
                    "tokens": str(tokens),
                },
            }
        )

    async def pay(self, session_id: str, *, card: str = DEFAULT_CARD) -> dict[str, Any]:
        """The customer pays the session on the hosted page; the session as it is then (complete,
        paid, with its payment_intent). A declined card raises EmulatorError (402); the session
        stays open."""
        return await self.call("POST", f"/_test/checkout/sessions/{session_id}/pay", {"card": card})

    async def expire(self, session_id: str) -> dict[str, Any]:
        """Stripe's POST /v1/checkout/sessions/{id}/expire (sends checkout.session.expired)."""
        return await self.call("POST", f"/v1/checkout/sessions/{session_id}/expire")

    async def refund(self, payment_intent: str, *, amount: int | None = None) -> dict[str, Any]:
        """Refund (all, or `amount` of) the intent's charge with Stripe's POST /v1/refunds; sends
        charge.refunded with the charge's cumulative amount_refunded. Returns the refund."""
        body: dict[str, Any] = {"payment_intent": payment_intent}
        if amount is not None:
            body["amount"] = amount
        return await self.call("POST", "/v1/refunds", body)

    async def stop(self) -> None:
        for http_client in self._stripe_http_clients:
            await http_client.close_async()
        self._stripe_http_clients.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)


@asynccontextmanager
async def running_emulator(*, log_path: Path | None = None) -> AsyncIterator[StripeEmulator]:
    emulator = await StripeEmulator.start(log_path=log_path)
    try:
        yield emulator
    finally:
        await emulator.stop()
