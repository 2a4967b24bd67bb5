"""The hot path against a reference model: every answer and every balance, through the real server.

Hypothesis drives Reserve, Commit, Release, ExtendReservation, Adjust, expiry, the passing of
minutes and of billing periods on two accounts (one with rate limits, one without) of a server
whose accounts have three buckets per pool, so that holds are placed in one bucket, spread over
several, or refused. After each step the real service must have answered what the model says, and
every balance must be the model's. The model is the oracle, written from the rules as the README
states them, not from the service's code:

- a Reserve holds ceil(input x input weight + max output x output weight) tokens (at least 1),
  allowance first; it is refused, in this order, for an unknown account, a reused request_id with
  other parameters (the same parameters replay the first answer), debt, a rate limit (the limit that
  keeps it out longest is named), or too few tokens;
- a Commit's usage has five classes (input, output, cached input, cache writes, reasoning); it is
  charged ceil(sum of each class x its weight) tokens and costs ceil(sum of each class x its price)
  micro-USD, at the prices and weights of the hold's catalog version: from the hold (allowance
  part first), then from what is available (allowance first), and what nothing pays for is debt;
  what the hold does not use returns, paying debt first; the allowance of a hold taken in an earlier
  period does not return, it expires. A hold given back at expiry is charged from what is
  available. A replay answers the same; other usage is refused;
- Release gives a hold back (refused once committed); after expiry it only records the Release;
- an account whose expired holds are charged (SetPlan) is charged a hold's worst case at expiry, as
  a Commit of its input and max output; a late Commit then settles the difference once (more is
  taken from what is available, less goes back purchased first, paying debt first, and allowance
  of an ended period expires), and a late Release gives it all back;
- a budget (SetBudget, on the label team=t) admits a labelled Reserve only if its cap less what
  its period used and holds has the Reserve's worst case (checked after the rate limits, before
  the balance; a Reserve refused for tokens holds nothing of it); every way a hold ends counts
  its charge against the budget's period the hold was taken in, and a budget starts again at the
  first labelled Reserve of a new period;
- ExtendReservation moves an open hold's expiry to now + ttl_seconds; refused once settled or expired;
- Adjust credits (paying debt first) or takes back what the pool has;
- at a period's end the allowance left expires and the next is granted, paying debt first.

Time is the database's clock, moved by whole minutes from the start of a minute, so every expiry
and every rate window is decided with no margin for chance. The machine runs in a thread with its
own event loop; the server's sweeper is run on the test's loop, where the server lives.
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
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from server_machine import ServerMachine

from meter.catalog import load as load_catalog
from meter.service.sweeper import sweep_once
from meter.storage.engine import dsn
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, error_info, new_id

# Long: run by `make test-long`, CI's own step, not by `make test`.
pytestmark = pytest.mark.long

T = TypeVar("T")

MODELS = ("basic", "claude-haiku-4-5", "gpt-4o")
TTLS = (30, 90)  # with time moved by whole minutes: expired after one minute, or after two
LIMITS = {"requests_per_minute": 3, "tokens_per_minute": 2_500, "concurrent_holds": 2}
BUDGET_LABELS = {"team": "t"}
MINUTE = 60


Tokens = tuple[int, int, int, int, int]  # input, output, cached input, cache writes, reasoning


def weighted(input_tokens: int, output_tokens: int, model: str) -> int:
    """Reserve's worst case: the max output at the dearer of the output and reasoning weights."""
    pricing = load_catalog().pricing(model)
    output_weight = max(pricing.output_weight, pricing.reasoning_weight)
    return math.ceil((input_tokens * pricing.input_weight + output_tokens * output_weight) / 1_000_000)


def priced(tokens: Tokens, model: str) -> tuple[int, int]:
    """(charged tokens, cost in micro-USD) of a call's usage: each rounded up once."""
    p = load_catalog().pricing(model)
    weights = (p.input_weight, p.output_weight, p.cached_input_weight, p.cache_write_weight, p.reasoning_weight)
    prices = (p.input_price, p.output_price, p.cached_input_price, p.cache_write_price, p.reasoning_price)
    return (
        math.ceil(sum(n * w for n, w in zip(tokens, weights, strict=True)) / 1_000_000),
        math.ceil(sum(n * c for n, c in zip(tokens, prices, strict=True)) / 1_000_000),
    )


@dataclass
class ModelHold:
    account: str
    request_id: str
    params: tuple[str, int, int, int]  # model, input, max output, ttl_seconds
    allowance: int
    purchased: int
    period: int
    expires: int  # model seconds
    status: str = "open"  # open, committed, released, expired
    charged_at_expiry: bool = False  # committed by the sweeper with its worst case
    usage: Tokens | None = None
    answer: tuple[int, int, int] | None = None  # charged, unbilled, cost
    labelled: bool = False  # with BUDGET_LABELS
    budget_part: int = 0  # what it holds of its account's budget

    @property
    def held(self) -> int:
        return self.allowance + self.purchased


@dataclass
class ModelAccount:
    limited: bool
    grant: int
    charges_expired: bool = False
    allowance: int = 0
    purchased: int = 0
    debt: int = 0
    used: int = 0
    period: int = 0
    window: int = 0
    requests: int = 0
    window_tokens: int = 0
    adjustments: dict[str, tuple[str, int]] = field(default_factory=dict)  # request_id: pool, delta
    budget: int | None = None  # the cap of its budget on BUDGET_LABELS (tokens), if it has one
    budget_used: int = 0
    budget_held: int = 0
    budget_period: int = 0  # the period its counts are of

    def budget_counts(self, hold: ModelHold, used: int, held: int) -> None:
        """A hold's charge (`used`) and what it gives back of its part (`held`), counted against
        the budget if it is still counting the hold's period."""
        if hold.budget_part and hold.period == self.budget_period:
            self.budget_used += used
            self.budget_held -= held

    def pay_debt(self, allowance: int, purchased: int) -> tuple[int, int]:
        """Tokens coming in pay the debt first (allowance first); returns what is left of each."""
        paid = min(self.debt, allowance)
        allowance -= paid
        self.debt -= paid
        paid = min(self.debt, purchased)
        self.debt -= paid
        return allowance, purchased - paid

    def draw(self, amount: int) -> int:
        """Take `amount` from what is available, allowance first; returns the shortfall."""
        from_allowance = min(amount, self.allowance)
        self.allowance -= from_allowance
        from_purchased = min(amount - from_allowance, self.purchased)
        self.purchased -= from_purchased
        return amount - from_allowance - from_purchased


class Refused(Exception):
    def __init__(self, reason: str, **detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def machine(meter: RunningMeter, database_url: str, server_loop: asyncio.AbstractEventLoop) -> type:
    class HotPath(ServerMachine):
        address = meter.address
        reservations = Bundle("reservations")

        def __init__(self) -> None:
            super().__init__()
            self.accounts: dict[str, ModelAccount] = {}
            self.holds: dict[str, ModelHold] = {}
            self.by_request: dict[tuple[str, str], str] = {}
            self.now = 0  # model seconds since the start of this example's first minute
            self.period_end = 0  # model seconds

        def call(self, call: Awaitable[T]) -> T:
            try:
                return self.run(call)
            except grpc.aio.AioRpcError as error:
                info = error_info(error)
                raise Refused(info.reason, **dict(info.metadata)) from None

        # -- setup ---------------------------------------------------------------------------

        @initialize(
            grants=st.tuples(st.sampled_from([0, 600, 3_000]), st.sampled_from([0, 600, 3_000])),
            funds=st.tuples(st.integers(0, 1_500), st.integers(0, 1_500)),
            charging=st.tuples(st.booleans(), st.booleans()),
            budgets=st.tuples(*[st.sampled_from([None, 0, 700, 2_500])] * 2),
        )
        def open_accounts(
            self,
            grants: tuple[int, int],
            funds: tuple[int, int],
            charging: tuple[bool, bool],
            budgets: tuple[int | None, int | None],
        ) -> None:
            self.run(self._start_of_a_minute())
            for limited, grant, fund, charges, budget in zip(
                (True, False), grants, funds, charging, budgets, strict=True
            ):
                account = new_id()
                limits = pb.RateLimits(**LIMITS) if limited else None
                expired_holds = pb.EXPIRED_HOLDS_CHARGE if charges else pb.EXPIRED_HOLDS_RELEASE
                answer = self.run(
                    self.stub.SetPlan(
                        pb.SetPlanRequest(
                            account_id=account, plan_id="enterprise", monthly_allowance_tokens=grant, limits=limits,
                            expired_holds=expired_holds,
                        )
                    )
                )  # fmt: skip
                end = answer.balance.period_end.ToDatetime().timestamp()
                self.period_end = round(end - self.origin)
                self.accounts[account] = ModelAccount(
                    limited=limited, grant=grant, charges_expired=charges, allowance=grant
                )
                if fund:
                    self._adjust(account, "purchased", fund, new_id("fund"))
                if budget is not None:
                    [(key, value)] = BUDGET_LABELS.items()
                    self.run(
                        self.stub.SetBudget(
                            pb.SetBudgetRequest(
                                account_id=account, label_key=key, label_value=value, unit=pb.BUDGET_UNIT_TOKENS,
                                cap=budget,
                            )
                        )
                    )  # fmt: skip
                    self.accounts[account].budget = budget

        async def _start_of_a_minute(self) -> None:
            """Move the server's clock to one second past the start of a coming minute: every
            step of the example then happens in that minute or a whole number of minutes later."""
            connection = await asyncpg.connect(dsn(database_url))
            try:
                now = float(await connection.fetchval("SELECT extract(epoch FROM now())")) + meter.clock.offset_seconds
            finally:
                await connection.close()
            start = (math.floor(now / MINUTE) + 2) * MINUTE + 1
            meter.clock.advance(timedelta(seconds=start - now))
            self.origin = start

        # -- rules ---------------------------------------------------------------------------

        def account(self, data: st.DataObject) -> tuple[str, ModelAccount]:
            account_id = data.draw(st.sampled_from(list(self.accounts)))  # in creation order: ids are random
            return account_id, self.accounts[account_id]

        @rule(target=reservations, data=st.data(), calls=st.integers(1, 3))
        def reserve(self, data: st.DataObject, calls: int) -> MultipleResults[str]:
            placed = [self.reserve_once(data) for _ in range(calls)]
            return multiple(*(reservation for reservation in placed if reservation))

        def reserve_once(self, data: st.DataObject) -> str | None:
            account_id, account = self.account(data)
            model, input_tokens, max_output, ttl_seconds = data.draw(
                st.tuples(st.sampled_from(MODELS), st.integers(0, 900), st.integers(1, 900), st.sampled_from(TTLS))
            )
            labelled = data.draw(st.booleans(), label="labelled for the budget")
            earlier = [h for h in self.holds.values() if h.account == account_id]
            request_id = new_id("req")
            if earlier and data.draw(st.integers(0, 3), label="reuse a request_id (1 in 4)") == 0:
                request_id = data.draw(st.sampled_from(earlier)).request_id
                if data.draw(st.booleans(), label="with the same parameters"):
                    first = self.holds[self.by_request[account_id, request_id]]
                    (model, input_tokens, max_output, ttl_seconds), labelled = first.params, first.labelled
            params = (model, input_tokens, max_output, ttl_seconds)
            request = pb.ReserveRequest(
                account_id=account_id, request_id=request_id, model=model, input_tokens=input_tokens,
                max_output_tokens=max_output, ttl_seconds=ttl_seconds, labels=BUDGET_LABELS if labelled else None,
            )  # fmt: skip
            expected = self.model_reserve(account_id, account, request_id, params, labelled)
            try:
                answer = self.call(self.stub.Reserve(request))
            except Refused as refusal:
                assert isinstance(expected, Refused), (refusal.reason, refusal.detail, expected)
                assert refusal.reason == expected.reason
                event(f"Reserve refused: {refusal.reason}")
                if refusal.reason == "RATE_LIMITED":
                    assert refusal.detail["limit"] in expected.detail["limit"].split(), refusal.detail
                return None
            assert not isinstance(expected, Refused), (expected.reason, expected.detail, answer)
            hold = self.holds.get(expected)
            if hold is None:  # placed now: the model learns the id the service gave it
                hold = self.placed
                self.holds[answer.reservation_id] = hold
                self.by_request[account_id, request_id] = answer.reservation_id
                expected = answer.reservation_id
            assert answer.reservation_id == expected
            assert answer.held_tokens == hold.held
            assert answer.status == pb.ReservationStatus.Value(f"RESERVATION_STATUS_{hold.status.upper()}")
            return expected

        def model_reserve(
            self,
            account_id: str,
            account: ModelAccount,
            request_id: str,
            params: tuple[str, int, int, int],
            labelled: bool,
        ) -> str | Refused:
            model, input_tokens, max_output, ttl_seconds = params
            replayed = self.by_request.get((account_id, request_id))
            if replayed is not None:
                if (self.holds[replayed].params, self.holds[replayed].labelled) != (params, labelled):
                    return Refused("IDEMPOTENCY_KEY_REUSED")
                return replayed
            if account.debt:
                return Refused("ACCOUNT_IN_DEBT")
            required = max(1, weighted(input_tokens, max_output, model))
            if account.limited:
                refusal = self.over_a_limit(account_id, account, required)
                if refusal is not None:
                    return refusal
            budgeted = labelled and account.budget is not None
            if budgeted:
                assert account.budget is not None
                if account.budget_period != account.period:  # its first call of a new period
                    account.budget_period, account.budget_used, account.budget_held = account.period, 0, 0
                if account.budget - account.budget_used - account.budget_held < required:
                    return Refused("BUDGET_EXCEEDED")
            if account.allowance + account.purchased < required:
                return Refused("INSUFFICIENT_TOKENS")
            if budgeted:
                account.budget_held += required
            from_allowance = min(required, account.allowance)
            account.allowance -= from_allowance
            account.purchased -= required - from_allowance
            account.requests += 1
            account.window_tokens += required
            self.placed = ModelHold(
                account_id, request_id, params, from_allowance, required - from_allowance, account.period,
                self.now + ttl_seconds, labelled=labelled, budget_part=required if budgeted else 0,
            )  # fmt: skip
            return "placed"

        def over_a_limit(self, account_id: str, account: ModelAccount, required: int) -> Refused | None:
            """The limit that keeps the Reserve out longest: the minute's end for the per-minute
            limits, the soonest expiry plus a sweep for open holds; a Reserve larger than the
            tokens-per-minute limit can never pass. Limits that keep it out as long are all
            acceptable answers (the names, space-separated)."""
            if required > LIMITS["tokens_per_minute"]:
                return Refused("RATE_LIMITED", limit="tokensPerMinute")
            minute_left = MINUTE - (self.now % MINUTE) - 1
            waits: list[tuple[float, str]] = []
            if account.requests + 1 > LIMITS["requests_per_minute"]:
                waits.append((minute_left, "requestsPerMinute"))
            if account.window_tokens + required > LIMITS["tokens_per_minute"]:
                waits.append((minute_left, "tokensPerMinute"))
            open_holds = [h for h in self.holds.values() if h.account == account_id and h.status == "open"]
            if len(open_holds) + 1 > LIMITS["concurrent_holds"]:
                soonest = min(h.expires for h in open_holds)
                sweep = meter.service.meter.parameters.sweep_seconds  # the server's sweep interval
                waits.append((max(0, soonest - self.now) + sweep, "concurrentHolds"))
            if not waits:
                return None
            longest = max(wait for wait, _ in waits)
            return Refused("RATE_LIMITED", limit=" ".join(name for wait, name in waits if wait == longest))

        @rule(
            reservation=reservations,
            input_tokens=st.integers(0, 1_200),
            output_tokens=st.integers(0, 3_000),
            classes=st.one_of(
                st.just((0, 0, 0)), st.tuples(st.integers(0, 1_200), st.integers(0, 600), st.integers(0, 1_500))
            ),
            replay=st.booleans(),
        )
        def commit(
            self, reservation: str, input_tokens: int, output_tokens: int, classes: tuple[int, int, int], replay: bool
        ) -> None:
            hold = self.holds.get(reservation)
            if hold is None:
                return
            tokens: Tokens = (input_tokens, output_tokens, *classes)
            if replay and hold.usage is not None:
                tokens = hold.usage
            expected = self.model_commit(hold, tokens)
            request = pb.CommitRequest(
                reservation_id=reservation,
                input_tokens=tokens[0],
                output_tokens=tokens[1],
                cached_input_tokens=tokens[2],
                cache_write_tokens=tokens[3],
                reasoning_tokens=tokens[4],
            )
            try:
                answer = self.call(self.stub.Commit(request))
            except Refused as refusal:
                assert isinstance(expected, Refused), (refusal.reason, expected)
                assert refusal.reason == expected.reason
                return
            assert not isinstance(expected, Refused), (expected.reason, answer)
            assert (answer.charged_tokens, answer.unbilled_tokens, answer.cost_micros) == expected, (answer, expected)

        def model_commit(self, hold: ModelHold, tokens: Tokens) -> tuple[int, int, int] | Refused:
            charge, cost = priced(tokens, hold.params[0])
            if hold.charged_at_expiry:
                self.accounts[hold.account].budget_counts(hold, charge - hold.held, 0)
                shortfall = self.correct_expiry_charge(hold, charge)
                hold.usage, hold.answer = tokens, (charge, shortfall, cost)
                return hold.answer
            if hold.status == "committed":
                if hold.usage != tokens:
                    return Refused("IDEMPOTENCY_KEY_REUSED")
                assert hold.answer is not None
                return hold.answer
            if hold.status == "released":
                return Refused("RESERVATION_RELEASED")
            account = self.accounts[hold.account]
            account.budget_counts(hold, charge, hold.budget_part if hold.status == "open" else 0)
            if hold.status == "expired":
                shortfall = account.draw(charge)  # its tokens came back at expiry
            else:
                from_allowance = min(charge, hold.allowance)
                from_purchased = min(charge - from_allowance, hold.purchased)
                unused_allowance = hold.allowance - from_allowance
                if hold.period != account.period:
                    unused_allowance = 0  # the period it was taken in has ended: it expires
                shortfall = account.draw(charge - from_allowance - from_purchased)
                back_allowance, back_purchased = account.pay_debt(unused_allowance, hold.purchased - from_purchased)
                account.allowance += back_allowance
                account.purchased += back_purchased
            account.debt += shortfall
            account.used += charge
            hold.status, hold.usage, hold.answer = "committed", tokens, (charge, shortfall, cost)
            return hold.answer

        @rule(reservation=reservations)
        def release(self, reservation: str) -> None:
            hold = self.holds.get(reservation)
            if hold is None:
                return
            try:
                self.call(self.stub.Release(pb.ReleaseRequest(reservation_id=reservation)))
            except Refused as refusal:
                assert (refusal.reason, hold.status) == ("RESERVATION_COMMITTED", "committed")
                assert not hold.charged_at_expiry
                return
            assert hold.status != "committed" or hold.charged_at_expiry
            account = self.accounts[hold.account]
            if hold.charged_at_expiry:
                account.budget_counts(hold, -hold.held, 0)
                self.correct_expiry_charge(hold, 0)
                hold.usage = hold.answer = None
            elif hold.status == "open":
                account.budget_counts(hold, 0, hold.budget_part)
                self.give_back(hold)
            hold.status = "released"

        def correct_expiry_charge(self, hold: ModelHold, charge: int) -> int:
            """A hold charged its worst case at expiry, settled at `charge`: the shortfall."""
            account = self.accounts[hold.account]
            hold.charged_at_expiry = False
            delta = charge - hold.held
            if delta >= 0:
                shortfall = account.draw(delta)
                account.debt += shortfall
                account.used += delta
                return shortfall
            back_purchased = min(-delta, hold.purchased)
            back_allowance = -delta - back_purchased
            if hold.period == account.period:
                account.used += delta
            else:
                back_allowance = 0  # the ended period's allowance: it expires
            back_allowance, back_purchased = account.pay_debt(back_allowance, back_purchased)
            account.allowance += back_allowance
            account.purchased += back_purchased
            return 0

        def give_back(self, hold: ModelHold) -> None:
            account = self.accounts[hold.account]
            allowance = hold.allowance if hold.period == account.period else 0
            allowance, purchased = account.pay_debt(allowance, hold.purchased)
            account.allowance += allowance
            account.purchased += purchased

        @rule(reservation=reservations, ttl_seconds=st.sampled_from(TTLS))
        def extend(self, reservation: str, ttl_seconds: int) -> None:
            hold = self.holds.get(reservation)
            if hold is None:
                return
            request = pb.ExtendReservationRequest(reservation_id=reservation, ttl_seconds=ttl_seconds)
            try:
                self.call(self.stub.ExtendReservation(request))
            except Refused as refusal:
                expected = {"committed": "COMMITTED", "released": "RELEASED"}.get(hold.status, "EXPIRED")
                if hold.charged_at_expiry:
                    expected = "EXPIRED"
                assert hold.status != "open" or self.now >= hold.expires, refusal.reason
                assert refusal.reason == f"RESERVATION_{expected}"
                return
            assert hold.status == "open" and self.now < hold.expires
            hold.expires = self.now + ttl_seconds

        @rule(data=st.data(), pool=st.sampled_from(["allowance", "purchased"]), delta=st.integers(-1_500, 2_000))
        def adjust(self, data: st.DataObject, pool: str, delta: int) -> None:
            account_id, account = self.account(data)
            if delta == 0:
                return
            request_id = new_id("adj")
            replay: bool = bool(account.adjustments) and data.draw(st.booleans(), label="replay an adjustment")
            if replay:
                request_id = data.draw(st.sampled_from(list(account.adjustments)))
                pool, delta = account.adjustments[request_id]
            self._adjust(account_id, pool, delta, request_id)

        def _adjust(self, account_id: str, pool: str, delta: int, request_id: str) -> None:
            account = self.accounts[account_id]
            index = ("allowance", "purchased").index(pool)
            request = pb.AdjustRequest(
                account_id=account_id, pool=pb.Pool.Value(f"POOL_{pool.upper()}"), delta=delta, reason="model",
                request_id=request_id,
            )  # fmt: skip
            replayed = request_id in account.adjustments
            available = (account.allowance, account.purchased)[index]
            try:
                self.call(self.stub.Adjust(request))
            except Refused as refusal:
                assert not replayed and delta < 0 and available < -delta, refusal.reason
                assert refusal.reason == "INSUFFICIENT_TOKENS"
                return
            if replayed:
                return
            assert delta > 0 or available >= -delta
            account.adjustments[request_id] = (pool, delta)
            if delta > 0:
                credited = account.pay_debt(delta, 0)[0] if index == 0 else account.pay_debt(0, delta)[1]
                delta = credited
            if index == 0:
                account.allowance += delta
            else:
                account.purchased += delta

        @rule()
        def sweep(self) -> None:
            """The sweeper gives back every open hold past its expiry."""
            asyncio.run_coroutine_threadsafe(sweep_once(meter.service.meter), server_loop).result(timeout=60)
            for hold in self.holds.values():
                if hold.status == "open" and self.now >= hold.expires:
                    account = self.accounts[hold.account]
                    if account.charges_expired:  # as a Commit of its worst case, which the hold covers
                        _, input_tokens, max_output, _ = hold.params
                        account.used += hold.held
                        account.budget_counts(hold, hold.held, hold.budget_part)
                        hold.status, hold.charged_at_expiry = "committed", True
                        usage: Tokens = (input_tokens, max_output, 0, 0, 0)
                        hold.usage, hold.answer = usage, (hold.held, 0, priced(usage, hold.params[0])[1])
                        continue
                    account.budget_counts(hold, 0, hold.budget_part)
                    self.give_back(hold)
                    hold.status = "expired"

        @rule(reservation=reservations, data=st.data(), release=st.booleans())
        def settle_after_expiry(self, reservation: str, data: st.DataObject, release: bool) -> None:
            """A Commit or Release that comes after its hold expired and was swept: the path a
            lost Commit takes, given back or charged as the account says. The usage is within
            what was reserved, or (1 in 3) beyond it."""
            hold = self.holds.get(reservation)
            if hold is None or hold.status != "open":
                return
            _, reserved_input, max_output, _ = hold.params
            beyond = data.draw(st.integers(0, 2), label="usage beyond the reservation") == 0
            input_tokens = data.draw(st.integers(0, 1_200 if beyond else reserved_input))
            output_tokens = data.draw(st.integers(0, 3_000 if beyond else max_output))
            self.advance(max(0, math.ceil((hold.expires - self.now) / MINUTE)) * MINUTE)
            self.sweep()
            if release:
                self.release(reservation)
            else:
                self.commit(reservation, input_tokens, output_tokens, (0, 0, 0), replay=False)

        @rule(minutes=st.integers(1, 2))
        def minutes_pass(self, minutes: int) -> None:
            self.advance(minutes * MINUTE)

        @rule()
        def period_ends(self) -> None:
            self.advance(math.ceil((self.period_end - self.now) / MINUTE) * MINUTE)

        def advance(self, seconds: int) -> None:
            meter.clock.advance(timedelta(seconds=seconds))
            self.now += seconds
            if seconds:  # whole minutes: a new rate window (none when the clock stands still)
                for account in self.accounts.values():
                    account.requests = account.window_tokens = 0
            if self.now >= self.period_end:
                self.period_end = self.following_period_end()
                for account in self.accounts.values():
                    account.period += 1
                    account.allowance = account.pay_debt(account.grant, 0)[0]
                    account.used = 0

        def following_period_end(self) -> int:
            """Calendar months (UTC): the end of the month after the one that just ended."""
            end = datetime.fromtimestamp(self.origin + self.period_end, tz=UTC)
            following = datetime(end.year + end.month // 12, end.month % 12 + 1, 1, tzinfo=UTC)
            return round(following.timestamp() - self.origin)

        # -- what the service shows ------------------------------------------------------------

        @invariant()
        def balances_are_the_models(self) -> None:
            for account_id, account in self.accounts.items():
                answer = self.run(self.stub.GetBalance(pb.GetBalanceRequest(account_id=account_id)))
                b = answer.balance
                held = sum(h.held for h in self.holds.values() if h.account == account_id and h.status == "open")
                available = 0 if account.debt else account.allowance + account.purchased
                actual = (b.allowance_remaining, b.purchased_remaining, b.held, b.available, b.debt, b.used_this_period)
                expected = (account.allowance, account.purchased, held, available, account.debt, account.used)
                assert actual == expected, (account_id, actual, expected)
                assert b.allowance_total == account.grant
                if account.budget is not None:
                    listed = self.run(self.stub.ListBudgets(pb.ListBudgetsRequest(account_id=account_id)))
                    [budget] = listed.budgets
                    current = account.budget_period == account.period
                    expected_budget = (account.budget_used, account.budget_held) if current else (0, 0)
                    assert (budget.used, budget.held) == expected_budget, (account_id, budget, expected_budget)
                if account.limited:
                    room = answer.headroom
                    open_holds = sum(
                        1 for h in self.holds.values() if h.account == account_id and h.status == "open"
                    )  # fmt: skip
                    assert (room.requests_this_minute, room.tokens_this_minute, room.holds) == (
                        max(0, LIMITS["requests_per_minute"] - account.requests),
                        max(0, LIMITS["tokens_per_minute"] - account.window_tokens),
                        max(0, LIMITS["concurrent_holds"] - open_holds),
                    )

    return HotPath


async def test_the_hot_path_answers_and_balances_as_the_model_says(meters: Any, database_url: str) -> None:
    meter: RunningMeter = await meters(buckets=3)
    state_machine = machine(meter, database_url, asyncio.get_running_loop())
    options = settings(max_examples=40, stateful_step_count=50, deadline=None, suppress_health_check=list(HealthCheck))
    await asyncio.to_thread(run_state_machine_as_test, state_machine, settings=options)
