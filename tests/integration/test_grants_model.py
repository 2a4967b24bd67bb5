"""Grants against a reference model: every answer and every part of a balance, through the real
server.

Hypothesis drives grants (promotions and goodwill, of priority 0 to 2, expiring in one to six
minutes or never), revocations, purchases (Adjust) and packs that expire a day after their sale
(CreditPurchase) with their refunds, Reserves, Commits (within their holds or beyond), Releases,
and minutes, days and months passing with the sweeper, on one account with three bucket rows per
pool, on a plan without an allowance or on one whose monthly allowance rolls over. After each step
every part of the balance must be the model's. The model states the rules, not the service's steps:

- the parts of a balance are drawn in one order: priority (lowest first), then the soonest
  expiry, then the oldest (the purchased pool, which never expires, is older than any grant; the
  month's allowance expires at the month's end);
- a Reserve holds its worst case from the parts in that order, or is refused for too few tokens
  (or in debt); it records what it took from each;
- a Commit charges its parts in the order drawn, then what is available in the same order, and
  what nothing pays for is debt; what a part does not use returns to it, paying debt first, unless
  its grant has ended (expired or revoked) or its month has: then it expires;
- a grant's tokens pay debt first; at its expiry what it has left leaves the balance (by the
  first call after it or the sweeper: the same either way); a revoked grant's remainder leaves now;
- at a month's end at most the plan's cap of the allowance left becomes a rollover grant living
  its days from the new month (paying debt first), the rest expires, and the new month's
  allowance comes (paying debt first);
- a pack's refund takes its share back from the pack's grant while it lives, then from what left
  that grant by expiry or revocation (nobody spent it), and only the rest becomes debt;
- Release gives every part back as a Commit of nothing does; the sweeper gives back a hold past
  its expiry the same way, and a Commit after that is charged from what is available.

Time moves by whole minutes; grants expire on the second after a minute starts, so each step is
on one side of every expiry.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, initialize, invariant, rule, run_state_machine_as_test
from server_machine import ServerMachine

from meter.catalog import Pack, Plan
from meter.domain.plans import Rollover
from meter.service.sweeper import sweep_once
from meter.storage.engine import dsn
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, error_info, new_id, suite_catalog

pytestmark = pytest.mark.long  # run by `make test-long`

T = TypeVar("T")
MINUTE = 60
DAY = 86_400
TTL = 3_600
PURCHASED = "purchased"
ALLOWANCE = "allowance"
PACK_TOKENS, PACK_PRICE = 1_000, 100
MONTHLY, ROLLOVER_CAP, ROLLOVER_DAYS = 1_500, 1_000, 40


@dataclass
class Part:
    """A pool of the balance: the purchased pool, or a grant (`grant:<id>`)."""

    name: str  # the allowance's months are parts of their own (`allowance@<month>`)
    priority: int
    expires: float | None  # model seconds; None: never
    seq: int  # 0 for the two pools, else the grant's id: the oldest first
    available: int = 0
    ended: bool = False
    gone: int = 0  # what left it by expiry or revocation

    @property
    def pool(self) -> str:
        return self.name.split("@")[0]

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

    def end(self, part: Part) -> None:
        part.ended, part.gone, part.available = True, part.gone + part.available, 0

    def end_expired(self, now: int) -> None:
        for part in self.parts.values():
            if not part.ended and part.expires is not None and part.expires <= now:
                self.end(part)

    def take_back(self, pack: Part, tokens: int, claimed: int, now: int) -> tuple[int, int]:
        """A refund of `tokens` of a pack: (from its expired tokens, as debt)."""
        from_grant = min(tokens, pack.available) if not pack.ended else 0
        pack.available -= from_grant
        from_cover = min(tokens - from_grant, pack.gone - claimed)
        to_debt = tokens - from_grant - from_cover
        self.debt += to_debt
        return from_cover, to_debt

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
            else:
                part.gone += back
        _, shortfall = self.take(left, now)
        self.debt += shortfall
        return shortfall


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def machine(meter: RunningMeter, database_url: str, server_loop: asyncio.AbstractEventLoop) -> type:
    class Grants(ServerMachine):
        address = meter.address
        holds = Bundle("holds")

        def __init__(self) -> None:
            super().__init__()
            self.model = Model()
            self.open: dict[str, Hold] = {}
            self.now = 0
            self.revocations = 0

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

        def balance(self) -> pb.GetBalanceResponse:
            return self.run(self.stub.GetBalance(pb.GetBalanceRequest(account_id=self.account)))

        def new_grant(self, request_id: str) -> int:
            """The id of the new grant opened under `request_id` (a pack's sale, a month rolled over)."""
            known = {p.seq for p in self.model.parts.values()}
            grants = self.balance().grants
            [grant_id] = [g.grant_id for g in grants if g.request_id.startswith(request_id) and g.grant_id not in known]
            return grant_id

        def begin_month(self, balance: pb.Balance) -> None:
            """The month the balance is in: its allowance, expiring at its end, paying debt first."""
            self.month_end = balance.period_end.ToSeconds() - self.origin
            self.month = f"{ALLOWANCE}@{self.month_end}"
            self.model.parts[self.month] = Part(self.month, 0, self.month_end, 0)
            if self.monthly:
                self.model.credit(self.month, self.monthly)

        def end_month(self) -> None:
            """The month ended: at most the cap of what is left rolls over, the rest expires."""
            month = self.model.parts[self.month]
            left = month.available
            self.model.end(month)
            rolled = min(left, ROLLOVER_CAP) if self.monthly else 0
            if rolled:
                grant_id = self.new_grant("rollover:")  # the call also brings the account to its new month
                name = f"grant:{grant_id}"
                self.model.parts[name] = Part(name, 0, self.month_end + ROLLOVER_DAYS * DAY, grant_id)
                self.model.credit(name, rolled)
            self.begin_month(self.balance().balance)

        @initialize(purchased=st.integers(0, 2_000), rolling=st.booleans())
        def open_account(self, purchased: int, rolling: bool) -> None:
            self.run(self._start_of_a_minute())
            self.account = new_id()
            self.monthly = MONTHLY if rolling else 0
            plan = "rolling" if rolling else "free"
            self.run(self.stub.SetPlan(pb.SetPlanRequest(account_id=self.account, plan_id=plan)))
            self.model.parts[PURCHASED] = Part(PURCHASED, 0, None, 0)
            self.packs: list[tuple[str, Part]] = []  # (payment_ref, its grant)
            self.refunded: dict[str, tuple[int, int]] = {}  # payment_ref: (cumulative minor, claimed)
            self.begin_month(self.balance().balance)
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
            grants = [p for p in self.model.parts.values() if p.name.startswith("grant:")]
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
                self.model.end(part)
                part.expires = self.now + self.revocations / 1_000

        @rule()
        def buy_a_pack(self) -> None:
            ref = new_id("cs_")
            request = pb.CreditPurchaseRequest(
                account_id=self.account, pack_id="pack_1d", tokens=PACK_TOKENS, amount_minor=PACK_PRICE,
                currency="usd", payment_ref=ref, payment_intent=f"pi_{ref}",
            )  # fmt: skip
            self.run(self.stub.CreditPurchase(request))
            self.model.end_expired(self.now)
            grant_id = self.new_grant(f"purchase:{ref}")
            name = f"grant:{grant_id}"
            # Sold a moment after model time now (the real time the run has taken): it has expired by
            # model time now + a day, not a minute before, and after any grant expiring before that.
            self.model.parts[name] = Part(name, 0, self.now + DAY - 0.5, grant_id)
            self.model.credit(name, PACK_TOKENS)
            self.packs.append((ref, self.model.parts[name]))

        @rule(data=st.data(), share=st.sampled_from([25, 50, 100]))
        def refund_a_pack(self, data: st.DataObject, share: int) -> None:
            if not self.packs:
                return
            ref, pack = data.draw(st.sampled_from(self.packs))
            before, claimed = self.refunded.get(ref, (0, 0))
            cumulative = min(PACK_PRICE, before + share)
            request = pb.ReverseCreditRequest(
                payment_intent=f"pi_{ref}", kind=pb.REVERSAL_KIND_REFUND, amount_minor=cumulative
            )
            answer = self.run(self.stub.ReverseCredit(request))
            self.model.end_expired(self.now)
            tokens = PACK_TOKENS * cumulative // PACK_PRICE - PACK_TOKENS * before // PACK_PRICE
            from_cover, to_debt = self.model.take_back(pack, tokens, claimed, self.now)
            self.refunded[ref] = (cumulative, claimed + from_cover)
            assert (answer.reversed_tokens, answer.unbilled_tokens) == (tokens, to_debt), (answer, tokens, to_debt)

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
            self.time_passes(minutes, sweep)

        @rule(days=st.integers(1, 2), sweep=st.booleans())
        def days_pass(self, days: int, sweep: bool) -> None:
            self.time_passes(days * DAY // MINUTE, sweep)

        @rule(sweep=st.booleans())
        def the_month_ends(self, sweep: bool) -> None:
            self.time_passes(math.ceil((self.month_end - self.now) / MINUTE), sweep)

        def time_passes(self, minutes: int, sweep: bool) -> None:
            meter.clock.advance(timedelta(minutes=minutes))
            self.now += minutes * MINUTE
            if self.now >= self.month_end:  # at most one month's end at a time
                self.end_month()
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
            answer = self.balance()
            self.model.end_expired(self.now)  # GetBalance brings the account to now first
            held: dict[str, int] = {}  # by pool: the allowance's holds of every month
            for hold in self.open.values():
                if hold.status == "open":
                    for name, tokens in hold.parts:
                        pool = self.model.parts[name].pool
                        held[pool] = held.get(pool, 0) + tokens
            listed = (p for p in self.model.parts.values() if p.pool != ALLOWANCE or p.name == self.month)
            expected = [
                (p.seq, p.available, held.get(p.pool, 0))
                for p in sorted(listed, key=Part.order)
                if p.available + held.get(p.pool, 0) > 0
            ]
            actual = [(g.grant_id, g.remaining, g.held) for g in answer.grants]
            assert actual == expected, (actual, expected)
            assert answer.balance.debt == self.model.debt

    return Grants


async def test_grants_are_drawn_and_ended_as_the_model_says(meters: Any, database_url: str) -> None:
    catalog = suite_catalog()
    pack = Pack("pack_1d", PACK_TOKENS, PACK_PRICE, "usd", active=True, expires_after_days=1)
    rolling = Plan("rolling", MONTHLY, per_account=False, rollover=Rollover(ROLLOVER_CAP, ROLLOVER_DAYS))
    catalog = replace(catalog, packs={**catalog.packs, pack.id: pack}, plans={**catalog.plans, rolling.id: rolling})
    meter: RunningMeter = await meters(catalog=catalog, buckets=3, sweep_interval_seconds=3600)
    state_machine = machine(meter, database_url, asyncio.get_running_loop())
    options = settings(max_examples=40, stateful_step_count=50, deadline=None, suppress_health_check=list(HealthCheck))
    await asyncio.to_thread(run_state_machine_as_test, state_machine, settings=options)
