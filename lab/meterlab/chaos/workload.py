"""The clients: random operations on a few hot and many cold accounts, over real gRPC channels and
signed Stripe webhooks, with duplicates, retries under the same idempotency keys, concurrent
twins, and late calls on holds that were already settled.

A client retries an operation (same key, same parameters) for as long as the service does not
answer, up to a deadline, the way a proxy or Stripe would; everything goes into the History.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import stripe
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc
from meterlab.chaos import billing
from meterlab.chaos.billing import EXPIRING_PACK, PACK, stripe_event
from meterlab.chaos.history import History, Op

# As a proxy would: reconnect within a second after a server restart, not after gRPC's default
# exponential backoff (up to two minutes).
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]
# Answers that say "not now", after which the same request is sent again.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
}
# Answers that are never deliberate: each one is a violation, then retried like a lost answer.
BUGS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
MODEL = "basic"  # weights 1: held = input + max_output, charged = input + output


def reason_of(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return error.code().name


@dataclass
class OpenHold:
    reservation_id: str
    account: str
    input_tokens: int
    max_output_tokens: int


@dataclass
class Purchase:
    account: str
    session: str
    intent: str
    charge: str
    refunded_sent: list[int] = field(default_factory=list)
    disputed: bool = False  # a disputed pack is not refunded too, and a refunded one not disputed


@dataclass
class Settings:
    hot_accounts: int = 3
    cold_accounts: int = 40
    funding: int = 20_000
    ttl_seconds: int = 600
    short_ttl_share: float = 0.0  # share of holds with a 1-second TTL (for sweeper races)
    op_deadline: float = 90.0  # how long a client keeps retrying one operation
    call_timeout: float = 5.0


class Workload:
    def __init__(
        self, history: History, targets: list[str], webhook_url: str, secret: str, settings: Settings, seed: int
    ) -> None:
        self.history, self.settings, self.webhook_url, self.secret = history, settings, webhook_url, secret
        self.rng = random.Random(seed)
        self.channels: list[grpc.aio.Channel] = []
        self.stubs: list[meter_pb2_grpc.MeterServiceStub] = []
        self.retarget(targets)
        self.hot = [f"hot-{i}-{uuid.uuid4().hex[:6]}" for i in range(settings.hot_accounts)]
        self.cold = [f"cold-{i}-{uuid.uuid4().hex[:6]}" for i in range(settings.cold_accounts)]
        self.holds: list[OpenHold] = []
        self.settled: list[tuple[OpenHold, str, tuple[int, int]]] = []  # (hold, how, usage)
        self.purchases: list[Purchase] = []
        self.grants: list[tuple[str, int]] = []  # (account, grant_id) granted and not revoked yet
        self.subscribers: list[str] = []  # accounts made by billing.subscribe
        self.bugs: list[str] = []  # INTERNAL/UNKNOWN answers and crashes, with what was called
        self.http: aiohttp.ClientSession | None = None
        # How far the servers' clock is ahead of this one (the clock scenario moves it), so that
        # subscription periods are written as Stripe would write them at the servers' time.
        self.clock_offset_seconds = 0.0

    @property
    def accounts(self) -> list[str]:
        """Every account the clients touched: the funded ones and the subscribers."""
        return self.hot + self.cold + self.subscribers

    def retarget(self, targets: list[str]) -> None:
        """Point the clients at these servers (a replica joins or leaves)."""
        self.channels = [grpc.aio.insecure_channel(t, options=CHANNEL_OPTIONS) for t in targets]
        self.stubs = [meter_pb2_grpc.MeterServiceStub(c) for c in self.channels]

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        if self.http:
            await self.http.close()

    async def fund(self) -> None:
        """Every account is opened on the enterprise plan with no allowance (only what it buys, and
        no catalog rate limits: chaos checks money, not limits) and starts with `funding`
        purchased tokens, through Adjust like any credit."""
        self.http = aiohttp.ClientSession(timeout=_HTTP_TIMEOUT)

        async def open_and_fund(account: str) -> None:
            op = self.history.begin("open", account, account)

            async def call(stub: meter_pb2_grpc.MeterServiceStub) -> dict[str, Any]:
                await stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="enterprise"), timeout=5)
                return {}

            await self._run(op, call)
            await self.adjust(account, self.settings.funding)

        await asyncio.gather(*(open_and_fund(account) for account in self.hot + self.cold))

    # --- the client loop -------------------------------------------------------------------

    async def client(self, until: Callable[[], bool]) -> None:
        steps: list[tuple[float, Callable[[], Awaitable[None]]]] = [
            (30, self.reserve),
            (22, self.commit),
            (9, self.release),
            (4, self.late_call),
            (4, self.extend),
            (9, self.balance),
            (5, lambda: self.adjust(self.account(), self._delta())),
            (3, self.grant),
            (1, self.revoke),
            (10, self.purchase),
            (4, self.refund),
            (2, lambda: billing.dispute(self)),
            (1, lambda: billing.subscribe(self)),
            (1, lambda: billing.subscribe_yearly(self)),
        ]
        weights = [w for w, _ in steps]
        while not until():
            _, step = self.rng.choices(steps, weights)[0]
            try:
                await step()
            except Exception as crash:  # noqa: BLE001 - a crash of the workload is a finding too
                self.bugs.append(f"workload step crashed: {crash!r}")

    def account(self) -> str:
        return self.rng.choice(self.hot if self.rng.random() < 0.6 else self.cold)

    def _delta(self) -> int:
        return self.rng.randint(100, 500) if self.rng.random() < 0.7 else -self.rng.randint(10, 200)

    # --- operations ------------------------------------------------------------------------

    async def reserve(self) -> None:
        account, rid = self.account(), f"req-{uuid.uuid4().hex}"
        short = self.rng.random() < self.settings.short_ttl_share
        args = {
            "input_tokens": self.rng.randint(10, 200),
            "max_output_tokens": self.rng.randint(10, 300),
            "ttl_seconds": 1 if short else self.settings.ttl_seconds,
        }
        op = await self._reserve(account, rid, args)
        if op.acked:
            hold = OpenHold(op.result["reservation_id"], account, args["input_tokens"], args["max_output_tokens"])
            self.holds.append(hold)
            if self.rng.random() < 0.1:  # the proxy retries although the first answer arrived
                await self._reserve(account, rid, args)
            if self.rng.random() < 0.03:  # a bug in a proxy: the same key for another call
                await self._reserve(account, rid, args | {"input_tokens": args["input_tokens"] + 1}, reuse=True)

    async def probe(self) -> None:
        """Returns once the service serves again: a Reserve (recorded like any other) answered."""
        args = {"input_tokens": 1, "max_output_tokens": 1, "ttl_seconds": self.settings.ttl_seconds}
        op = await self._reserve(self.hot[0], f"probe-{uuid.uuid4().hex}", args, pause=0.02)
        if op.acked:
            hold = OpenHold(op.result["reservation_id"], self.hot[0], 1, 1)
            await self._release(hold)
            self.settled.append((hold, "released", (0, 0)))

    async def _reserve(
        self, account: str, rid: str, args: dict[str, int], reuse: bool = False, pause: float = 0.05
    ) -> Op:
        request = pb.ReserveRequest(account_id=account, request_id=rid, model=MODEL, **args)
        op = self.history.begin("reserve", account, rid, reuse=reuse, **args)

        async def call(stub: meter_pb2_grpc.MeterServiceStub) -> dict[str, Any]:
            answer = await stub.Reserve(request, timeout=self.settings.call_timeout)
            return {"reservation_id": answer.reservation_id, "held": answer.held_tokens}

        await self._run(op, call, pause)
        return op

    async def commit(self) -> None:
        if not self.holds:
            return await self.reserve()
        hold = self.holds.pop(self.rng.randrange(len(self.holds)))
        usage = (hold.input_tokens, self.rng.randint(0, int(hold.max_output_tokens * 1.3)))
        if self.rng.random() < 0.05:  # two proxies commit the same call at once
            await asyncio.gather(self._commit(hold, usage), self._commit(hold, usage))
        else:
            await self._commit(hold, usage)
        self.settled.append((hold, "committed", usage))

    async def _commit(self, hold: OpenHold, usage: tuple[int, int]) -> Op:
        op = self.history.begin("commit", hold.account, hold.reservation_id, input=usage[0], output=usage[1])
        request = pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=usage[0], output_tokens=usage[1])

        async def call(stub: meter_pb2_grpc.MeterServiceStub) -> dict[str, Any]:
            answer = await stub.Commit(request, timeout=self.settings.call_timeout)
            return {"charged": answer.charged_tokens, "unbilled": answer.unbilled_tokens, "late": answer.late}

        await self._run(op, call)
        return op

    async def release(self) -> None:
        if not self.holds:
            return await self.reserve()
        hold = self.holds.pop(self.rng.randrange(len(self.holds)))
        await self._release(hold)
        self.settled.append((hold, "released", (0, 0)))

    async def _release(self, hold: OpenHold) -> Op:
        op = self.history.begin("release", hold.account, hold.reservation_id)

        async def call(stub: meter_pb2_grpc.MeterServiceStub) -> dict[str, Any]:
            answer = await stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id), timeout=5)
            return {"available": answer.balance.available}

        await self._run(op, call)
        return op

    async def late_call(self) -> None:
        """A call on a hold that was settled already: a repeated Commit, or the other verb."""
        if not self.settled:
            return await self.balance()
        hold, how, usage = self.rng.choice(self.settled)
        if self.rng.random() < 0.5:
            if how == "committed":
                await self._commit(hold, usage)
            else:
                await self._commit(hold, (hold.input_tokens, 1))
        else:
            await self._release(hold)

    async def extend(self) -> None:
        if not self.holds:
            return await self.reserve()
        hold = self.rng.choice(self.holds)
        op = self.history.begin("extend", hold.account, hold.reservation_id)
        request = pb.ExtendReservationRequest(reservation_id=hold.reservation_id, ttl_seconds=self.settings.ttl_seconds)

        async def call(stub: meter_pb2_grpc.MeterServiceStub) -> dict[str, Any]:
            await stub.ExtendReservation(request, timeout=self.settings.call_timeout)
            return {}

        await self._run(op, call)

    async def balance(self) -> None:
        account = self.account()
        op = self.history.begin("balance", account, "")

        async def call(stub: meter_pb2_grpc.MeterServiceStub) -> dict[str, Any]:
            b = (await stub.GetBalance(pb.GetBalanceRequest(account_id=account), timeout=5)).balance
            return {
                "available": b.available,
                "held": b.held,
                "debt": b.debt,
                "purchased": b.purchased_remaining,
                "allowance": b.allowance_remaining,
            }

        await self._run(op, call)

    async def adjust(self, account: str, delta: int) -> None:
        key = f"adj-{uuid.uuid4().hex}"
        request = pb.AdjustRequest(
            account_id=account, pool=pb.POOL_PURCHASED, delta=delta, reason="chaos", request_id=key
        )
        for _ in range(2 if self.rng.random() < 0.2 else 1):  # sometimes retried after its answer
            op = self.history.begin("adjust", account, key, delta=delta)

            async def call(stub: meter_pb2_grpc.MeterServiceStub) -> dict[str, Any]:
                answer = await stub.Adjust(request, timeout=self.settings.call_timeout)
                return {"available": answer.balance.available}

            await self._run(op, call)

    async def grant(self) -> None:
        """A promotion of the account's own, half of them expiring within seconds (while holds on it
        are open), some granted twice by the same request_id."""
        account, key = self.account(), f"grant-{uuid.uuid4().hex}"
        tokens, priority = self.rng.randint(100, 1_000), self.rng.randint(0, 1)
        request = pb.GrantRequest(account_id=account, request_id=key, tokens=tokens, priority=priority, reason="chaos")
        if self.rng.random() < 0.5:
            seconds = self.clock_offset_seconds + time.time() + self.rng.uniform(2, 20)
            request.expires_at.FromSeconds(int(seconds) + 1)
        for _ in range(2 if self.rng.random() < 0.2 else 1):
            op = self.history.begin("grant", account, key, tokens=tokens)

            async def call(stub: meter_pb2_grpc.MeterServiceStub) -> dict[str, Any]:
                answer = await stub.Grant(request, timeout=self.settings.call_timeout)
                return {"grant_id": answer.grant.grant_id}

            await self._run(op, call)
            if op.acked:
                self.grants.append((account, op.result["grant_id"]))

    async def revoke(self) -> None:
        if not self.grants:
            return await self.grant()
        account, grant_id = self.grants.pop(self.rng.randrange(len(self.grants)))
        op = self.history.begin("revoke", account, str(grant_id))
        request = pb.RevokeGrantRequest(account_id=account, grant_id=grant_id)

        async def call(stub: meter_pb2_grpc.MeterServiceStub) -> dict[str, Any]:
            answer = await stub.RevokeGrant(request, timeout=self.settings.call_timeout)
            return {"tokens": answer.revoked_tokens}

        await self._run(op, call)

    async def purchase(self) -> None:
        """A pack of either kind (one expiring a day after its sale, or never), delivered as Stripe
        delivers it: sometimes twice, sometimes with a second event for the same session."""
        account, suffix = self.account(), uuid.uuid4().hex[:16]
        bought = Purchase(account, f"cs_chaos_{suffix}", f"pi_chaos_{suffix}", f"ch_chaos_{suffix}")
        pack = self.rng.choice((PACK, EXPIRING_PACK))
        session = {
            "id": bought.session,
            "object": "checkout.session",
            "payment_intent": bought.intent,
            "payment_status": "paid",
            "status": "complete",
            "amount_total": pack.price_minor,
            "currency": pack.currency,
            "metadata": {
                "type": "token_pack_purchase",
                "account_id": account,
                "pack_id": pack.id,
                "tokens": str(pack.tokens),
            },
        }
        payload = stripe_event("checkout.session.completed", session)
        op = await self.deliver("purchase", account, bought.session, payload)
        if op.acked:
            self.purchases.append(bought)
        if self.rng.random() < 0.2:  # Stripe delivers an event more than once
            await self.deliver("purchase", account, bought.session, payload)
        if self.rng.random() < 0.1:  # the same session, paid asynchronously: another event
            await self.deliver(
                "purchase", account, bought.session, stripe_event("checkout.session.async_payment_succeeded", session)
            )

    def undisputed_purchase(self) -> Purchase | None:
        """A pack nobody refunded or disputed yet."""
        fresh = [p for p in self.purchases if not p.disputed and not p.refunded_sent]
        return self.rng.choice(fresh) if fresh else None

    async def refund(self) -> None:
        refundable = [p for p in self.purchases if not p.disputed]
        if not refundable:
            return await self.purchase()
        bought = self.rng.choice(refundable)
        amount = self.rng.choice((PACK.price_minor // 2, PACK.price_minor))  # cumulative, as Stripe sends it
        charge = {
            "id": bought.charge,
            "object": "charge",
            "payment_intent": bought.intent,
            "amount": PACK.price_minor,
            "amount_refunded": amount,
            "refunded": amount == PACK.price_minor,
            "invoice": None,
        }
        bought.refunded_sent.append(amount)
        await self.deliver(
            "refund", bought.account, bought.session, stripe_event("charge.refunded", charge), amount=amount
        )

    # --- sending, retrying, recording ------------------------------------------------------

    async def _run(
        self, op: Op, call: Callable[[meter_pb2_grpc.MeterServiceStub], Awaitable[dict[str, Any]]], pause: float = 0.05
    ) -> None:
        deadline = time.monotonic() + self.settings.op_deadline
        while True:
            op.attempts += 1
            stub = self.stubs[(op.sent + op.attempts) % len(self.stubs)]
            try:
                self.history.ack(op, **await call(stub))
                return
            except grpc.aio.AioRpcError as error:
                reason = reason_of(error)
                if error.code() in BUGS:
                    self.bugs.append(f"{op.kind} {op.key}: {error.code().name} {reason} {error.details()}")
                elif error.code() not in RETRYABLE:
                    self.history.refuse(op, reason)
                    return
                op.reason = reason
            if time.monotonic() > deadline:
                self.history.give_up(op, op.reason)
                return
            await asyncio.sleep(pause * min(op.attempts, 10))

    async def deliver(self, kind: str, account: str, session: str, payload: bytes, **args: Any) -> Op:
        """POST an event as Stripe does, and redeliver it while the answer is not a 2xx."""
        assert self.http is not None
        op = self.history.begin(kind, account, session, event_id=json.loads(payload)["id"], **args)
        deadline = time.monotonic() + self.settings.op_deadline
        while True:
            op.attempts += 1
            header = stripe.WebhookSignature.generate_signature_header(
                payload.decode(), self.secret, timestamp=int(time.time())
            )
            headers = {"Content-Type": "application/json", "Stripe-Signature": header}
            try:
                async with self.http.post(self.webhook_url, data=payload, headers=headers) as response:
                    answer = await response.json(content_type=None)
                    if response.status == 200 and answer.get("status") != "rejected":
                        self.history.ack(op, status=answer.get("status"))
                        return op
                    if response.status == 200 or 400 <= response.status < 500:
                        self.history.refuse(op, f"{response.status} {answer}")
                        return op
                    if response.status >= 500 and response.status != 503:
                        self.bugs.append(f"{kind} {session}: HTTP {response.status} {answer}")
                    op.reason = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as error:
                op.reason = repr(error)
            if time.monotonic() > deadline:
                self.history.give_up(op, op.reason)
                return op
            await asyncio.sleep(0.05 * min(op.attempts, 10))
