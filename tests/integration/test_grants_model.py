"""Grants against a reference model: every answer and every part of a balance, through the real
server.

Hypothesis drives grants (promotions and goodwill, of priority 0 to 2, expiring in one to six
minutes or never), revocations, purchases (Adjust), Reserves, Commits (within their holds or
beyond), Releases, and minutes passing with the sweeper, on one account without an allowance and
with three bucket rows per pool. After each step every part of the balance must be the model's.
The model states the rules, not the service's steps:

- the parts of a balance are drawn in one order: priority (lowest first), then the soonest
  expiry, then the oldest (the purchased pool, which never expires, is older than any grant);
- a Reserve holds its worst case from the parts in that order, or is refused for too few tokens
  (or in debt); it records what it took from each;
- a Commit charges its parts in the order drawn, then what is available in the same order, and
  what nothing pays for is debt; what a part does not use returns to it, paying debt first, unless
  its grant has ended (expired or revoked): then it expires;
- a grant's tokens pay debt first; at its expiry what it has left leaves the balance (by the
  first call after it or the sweeper: the same either way); a revoked grant's remainder leaves now;
- Release gives every part back as a Commit of nothing does; the sweeper gives back a hold past
  its expiry the same way, and a Commit after that is charged from what is available.

Time moves by whole minutes; grants expire on the second after a minute starts, so each step is
on one side of every expiry.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from meter.service.sweeper import sweep_once
from meter.storage.engine import dsn
from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc
from support import RunningMeter, error_info, new_id

pytestmark = pytest.mark.long  # run by `make test-long`

T = TypeVar("T")
MINUTE = 60
TTL = 3_600
PURCHASED = "purchased"


@dataclass
class Part:
    """A pool of the balance: the purchased pool, or a grant (`grant:<id>`)."""

    name: str
    priority: int
    expires: float | None  # model seconds; None: never
    seq: int  # 0 for the purchased pool, else the grant's id: the oldest first
    available: int = 0
    ended: bool = False

    def order(self) -> tuple[int, float, int]:
        return (self.priority, math.inf if self.expires is None else self.expires, self.seq)


@dataclass
class Hold:
    parts: list[tuple[str, int]]  # (pool, tokens), in the order drawn
    expires: int  # model seconds
    status: str = "open"  # open, committed, released, expired (given back by the sweeper)

    @property
    def held(self) -> int:
        return sum(tokens for _, tokens in self.parts)


@dataclass
class Model:
    parts: dict[str, Part] = field(default_factory=dict)
    debt: int = 0

    def live(self, now: int) -> list[Part]:
        return sorted(
            (p for p in self.parts.values() if not p.ended and (p.expires is None or p.expires > now)),
            key=Part.order,
        )

    def take(self, amount: int, now: int) -> tuple[list[tuple[str, int]], int]:
        """`amount` from what is available, in the order drawn: the parts taken, the shortfall."""
        taken = []
        for part in self.live(now):
            if amount == 0:
                break
            tokens = min(amount, part.available)
            if tokens:
                part.available -= tokens
                amount -= tokens
                taken.append((part.name, tokens))
        return taken, amount

    def credit(self, name: str, tokens: int) -> None:
        paid = min(self.debt, tokens)
        self.debt -= paid
        self.parts[name].available += tokens - paid

    def end_expired(self, now: int) -> None:
        for part in self.parts.values():
            if not part.ended and part.expires is not None and part.expires <= now:
                part.ended, part.available = True, 0

    def settle(self, hold: Hold, charge: int, now: int) -> int:
        """A hold ends charged `charge`: the shortfall (now debt)."""
        left = charge
        for name, tokens in hold.parts:
            used = min(left, tokens)
            left -= used
            part = self.parts[name]
            back = tokens - used
            if back and not part.ended and (part.expires is None or part.expires > now):
                self.credit(name, back)
        _, shortfall = self.take(left, now)
        self.debt += shortfall
        return shortfall


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def machine(meter: RunningMeter, database_url: str, server_loop: asyncio.AbstractEventLoop) -> type:
    class Grants(RuleBasedStateMachine):
        holds = Bundle("holds")

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            self.channel = self.run(self._open())
            self.stub = meter_pb2_grpc.MeterServiceStub(self.channel)
            self.model = Model()
            self.open: dict[str, Hold] = {}
            self.now = 0
            self.revocations = 0

        async def _open(self) -> grpc.aio.Channel:
            return grpc.aio.insecure_channel(meter.address)

        def run(self, call: Awaitable[T]) -> T:
            return self.loop.run_until_complete(call)

        def teardown(self) -> None:
            self.run(self.channel.close())
            asyncio.set_event_loop(None)
            self.loop.close()

        def call(self, call: Awaitable[T]) -> T | str:
            """The answer, or the ErrorInfo reason of a refusal."""
            try:
                return self.run(call)
            except grpc.aio.AioRpcError as error:
                return error_info(error).reason

        async def _start_of_a_minute(self) -> None:
            connection = await asyncpg.connect(dsn(database_url))
            try:
                now = float(await connection.fetchval("SELECT extract(epoch FROM now())")) + meter.clock.offset_seconds
            finally:
                await connection.close()
            start = (math.floor(now / MINUTE) + 2) * MINUTE + 30
            meter.clock.advance(timedelta(seconds=start - now))
            self.origin = start

        def at(self, model_seconds: int) -> datetime:
            return datetime.fromtimestamp(self.origin + model_seconds, UTC)

        @initialize(purchased=st.integers(0, 2_000))
        def open_account(self, purchased: int) -> None:
            self.run(self._start_of_a_minute())
            self.account = new_id()
            self.run(self.stub.SetPlan(pb.SetPlanRequest(account_id=self.account, plan_id="free")))
            self.model.parts[PURCHASED] = Part(PURCHASED, 0, None, 0)
            if purchased:
                self.adjust(purchased)

        @rule(tokens=st.integers(1, 2_000))
        def adjust(self, tokens: int) -> None:
            request = pb.AdjustRequest(
                account_id=self.account, pool=pb.POOL_PURCHASED, delta=tokens, reason="t", request_id=new_id("a")
            )
            self.run(self.stub.Adjust(request))
            self.model.credit(PURCHASED, tokens)

        @rule(
            tokens=st.integers(1, 2_000),
            priority=st.integers(0, 2),
            minutes=st.one_of(st.none(), st.integers(1, 6)),
            goodwill=st.booleans(),
        )
        def grant(self, tokens: int, priority: int, minutes: int | None, goodwill: bool) -> None:
            # A second past the start of a minute (model time 0 is half a minute past one).
            expires = None if minutes is None else (self.now // MINUTE + minutes) * MINUTE - 29
            request = pb.GrantRequest(
                account_id=self.account, request_id=new_id("g"), tokens=tokens, priority=priority, reason="model",
                source=pb.GRANT_SOURCE_ADJUSTMENT if goodwill else pb.GRANT_SOURCE_PROMOTION,
                expires_at=stamp(self.at(expires)) if expires is not None else None,
            )  # fmt: skip
            answer = self.run(self.stub.Grant(request))
            name = f"grant:{answer.grant.grant_id}"
            self.model.parts[name] = Part(name, priority, expires, answer.grant.grant_id)
            self.model.credit(name, tokens)

        @rule(data=st.data())
        def revoke(self, data: st.DataObject) -> None:
            grants = [p for p in self.model.parts.values() if p.name != PURCHASED]
            if not grants:
                return
            part = data.draw(st.sampled_from(grants))
            grant_id = int(part.name.removeprefix("grant:"))
            answer = self.run(self.stub.RevokeGrant(pb.RevokeGrantRequest(account_id=self.account, grant_id=grant_id)))
            self.model.end_expired(self.now)  # the call brought the account to now first
            expected = (not part.ended, part.available if not part.ended else 0)
            assert (answer.revoked, answer.revoked_tokens) == expected, (answer, expected)
            if not part.ended:  # its rows now end at the revocation: drawn (and listed) in that order
                self.revocations += 1
                part.ended, part.available = True, 0
                part.expires = self.now + self.revocations / 1_000

        @rule(target=holds, worst=st.integers(1, 1_500))
        def reserve(self, worst: int) -> str:
            request = pb.ReserveRequest(
                account_id=self.account, request_id=new_id("r"), model="basic", input_tokens=worst - 1,
                max_output_tokens=1, ttl_seconds=TTL,
            )  # fmt: skip
            answer = self.call(self.stub.Reserve(request))
            self.model.end_expired(self.now)
            available = sum(p.available for p in self.model.live(self.now))
            if self.model.debt:
                assert answer == "ACCOUNT_IN_DEBT", answer
                return ""
            if available < worst:
                assert answer == "INSUFFICIENT_TOKENS", answer
                return ""
            assert not isinstance(answer, str), answer
            parts, _ = self.model.take(worst, self.now)
            self.open[answer.reservation_id] = Hold(parts, self.now + TTL)
            return answer.reservation_id

        @rule(reservation=holds, share=st.sampled_from([0, 0.5, 1, 1.5, 3]))
        def commit(self, reservation: str, share: float) -> None:
            hold = self.open.get(reservation)
            if hold is None or hold.status not in ("open", "expired"):
                return
            charge = math.ceil(hold.held * share)
            answer = self.run(
                self.stub.Commit(pb.CommitRequest(reservation_id=reservation, input_tokens=charge, output_tokens=0))
            )
            self.model.end_expired(self.now)
            if hold.status == "expired":  # given back at expiry: charged from what is available
                _, shortfall = self.model.take(charge, self.now)
                self.model.debt += shortfall
            else:
                shortfall = self.model.settle(hold, charge, self.now)
            hold.status = "committed"
            assert (answer.charged_tokens, answer.unbilled_tokens) == (charge, shortfall), (answer, charge, shortfall)

        @rule(reservation=holds)
        def release(self, reservation: str) -> None:
            hold = self.open.get(reservation)
            if hold is None or hold.status != "open":
                return
            self.run(self.stub.Release(pb.ReleaseRequest(reservation_id=reservation)))
            self.model.end_expired(self.now)
            self.model.settle(hold, 0, self.now)
            hold.status = "released"

        @rule(minutes=st.integers(1, 3), sweep=st.booleans())
        def minutes_pass(self, minutes: int, sweep: bool) -> None:
            meter.clock.advance(timedelta(minutes=minutes))
            self.now += minutes * MINUTE
            if sweep:
                asyncio.run_coroutine_threadsafe(sweep_once(meter.service.meter), server_loop).result(timeout=60)
                self.model.end_expired(self.now)
                for hold in self.open.values():
                    if hold.status == "open" and hold.expires <= self.now:
                        self.model.settle(hold, 0, self.now)
                        hold.status = "expired"

        @invariant()
        def parts_are_the_models(self) -> None:
            if not hasattr(self, "account"):
                return
            answer = self.run(self.stub.GetBalance(pb.GetBalanceRequest(account_id=self.account)))
            self.model.end_expired(self.now)  # GetBalance brings the account to now first
            held: dict[str, int] = {}
            for hold in self.open.values():
                if hold.status == "open":
                    for name, tokens in hold.parts:
                        held[name] = held.get(name, 0) + tokens
            expected = [
                (0 if p.name == PURCHASED else p.seq, p.available, held.get(p.name, 0))
                for p in sorted(self.model.parts.values(), key=Part.order)
                if p.available + held.get(p.name, 0) > 0
            ]
            actual = [(g.grant_id, g.remaining, g.held) for g in answer.grants]
            assert actual == expected, (actual, expected)
            assert answer.balance.debt == self.model.debt

    return Grants


async def test_grants_are_drawn_and_ended_as_the_model_says(meters: Any, database_url: str) -> None:
    meter: RunningMeter = await meters(buckets=3, sweep_interval_seconds=3600)
    state_machine = machine(meter, database_url, asyncio.get_running_loop())
    options = settings(max_examples=40, stateful_step_count=50, deadline=None, suppress_health_check=list(HealthCheck))
    await asyncio.to_thread(run_state_machine_as_test, state_machine, settings=options)
