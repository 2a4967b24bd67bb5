"""The success path of each RPC through a real server and real Postgres."""

from __future__ import annotations

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, funded_account, ledger, new_id, reserve_request


class TestReserveCommit:
    """Reserve holds the worst case; Commit charges actual usage and returns the rest."""

    async def test_reserve_holds_weighted_worst_case_from_allowance(self, meter: RunningMeter) -> None:
        account = new_id()
        await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
        response = await meter.stub.Reserve(
            reserve_request(account, model="gpt-4o", input_tokens=1000, max_output_tokens=500, labels={"agent": "a1"})
        )
        # gpt-4o weights: input 1, output 4 -> 1000 + 2000
        assert response.held_tokens == 3000
        assert response.status == pb.RESERVATION_STATUS_OPEN
        assert response.catalog_version == "2026-11-30.1"
        assert response.reservation_id.startswith(f"{account}/")
        assert response.balance.held == 3000
        assert response.balance.allowance_remaining == 47_000
        assert response.balance.available == 47_000

    async def test_commit_charges_usage_and_returns_the_rest(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account = new_id()
        await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
        hold = await meter.stub.Reserve(
            reserve_request(account, model="gpt-4o", input_tokens=1000, max_output_tokens=500)
        )
        charge = await meter.stub.Commit(
            pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=900, output_tokens=100)
        )
        assert charge.charged_tokens == 900 + 4 * 100
        # gpt-4o: $2.50 / M input, $10 / M output -> 2250 + 1000 micro-USD
        assert charge.cost_micros == 3250
        assert charge.unbilled_tokens == 0
        assert not charge.late
        assert charge.balance.held == 0
        assert charge.balance.allowance_remaining == 50_000 - 1300
        assert charge.balance.used_this_period == 1300
        entries = await ledger(engine, account)
        assert [(e["kind"], e["pool"], e["amount"]) for e in entries] == [
            ("subscription_grant", "allowance", 50_000),
            ("usage", "allowance", -1300),
        ]
        assert entries[1]["reservation_id"] == hold.reservation_id

    async def test_release_returns_the_whole_hold(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account = await funded_account(meter.stub, 1000)
        hold = await meter.stub.Reserve(reserve_request(account))
        assert hold.balance.purchased_remaining == 900
        released = await meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id))
        assert released.balance.purchased_remaining == 1000
        assert released.balance.held == 0
        assert [e["kind"] for e in await ledger(engine, account)] == ["adjustment"]

    async def test_hold_draws_allowance_first_then_purchased(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account = await funded_account(meter.stub, 100_000, plan="starter")
        hold = await meter.stub.Reserve(reserve_request(account, input_tokens=40_000, max_output_tokens=20_000))
        assert hold.held_tokens == 60_000
        assert hold.balance.allowance_remaining == 0
        assert hold.balance.purchased_remaining == 90_000
        charge = await meter.stub.Commit(
            pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=40_000, output_tokens=15_000)
        )
        # 55 000 used: 50 000 allowance + 5 000 purchased; the unused 5 000 purchased goes back.
        assert charge.balance.allowance_remaining == 0
        assert charge.balance.purchased_remaining == 95_000
        usage = [(e["pool"], e["amount"]) for e in await ledger(engine, account) if e["kind"] == "usage"]
        assert usage == [("allowance", -50_000), ("purchased", -5_000)]

    async def test_extend_reservation_moves_expiry(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 1000)
        hold = await meter.stub.Reserve(reserve_request(account, ttl_seconds=30))
        extended = await meter.stub.ExtendReservation(
            pb.ExtendReservationRequest(reservation_id=hold.reservation_id, ttl_seconds=600)
        )
        assert extended.expires_at.seconds - hold.expires_at.seconds >= 569


class TestBalanceAndCatalog:
    async def test_get_balance_is_a_full_snapshot(self, meter: RunningMeter) -> None:
        account = new_id()
        await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="pro"))
        snapshot = await balance(meter.stub, account)
        assert snapshot.account_id == account
        assert snapshot.plan_id == "pro"
        assert snapshot.allowance_total == 500_000
        assert snapshot.allowance_remaining == 500_000
        assert snapshot.available == 500_000
        assert snapshot.debt == 0
        assert snapshot.warning_level == pb.WARNING_LEVEL_NONE
        start, end = snapshot.period_start.ToDatetime(), snapshot.period_end.ToDatetime()
        assert start.day == 1 and start.hour == 0 and end.day == 1 and end > start

    async def test_get_catalog_serves_the_catalog_file(self, meter: RunningMeter) -> None:
        catalog = await meter.stub.GetCatalog(pb.GetCatalogRequest())
        assert catalog.version == "2026-11-30.1"
        models = {m.id: m for m in catalog.models}
        assert models["gpt-4o"].input_price_micros_per_million == 2_500_000
        assert models["gpt-4o"].output_weight == "4"
        assert models["claude-haiku-4-5"].input_weight == "0.25"
        # Two providers' shapes: Anthropic's cache reads at a tenth of input and writes above it,
        # OpenAI's cache reads at half and writes at input's price; reasoning at output's.
        sonnet, gpt = models["claude-sonnet-4-5"], models["gpt-4o"]
        assert (sonnet.cached_input_weight, sonnet.cache_write_weight, sonnet.reasoning_weight) == ("0.1", "1.25", "5")
        assert (gpt.cached_input_weight, gpt.cache_write_weight, gpt.reasoning_weight) == ("0.5", "1", "4")
        assert (gpt.cached_input_price_micros_per_million, gpt.cache_write_price_micros_per_million) == (
            1_250_000, 2_500_000,
        )  # fmt: skip
        plans = {p.id: p for p in catalog.plans}
        assert plans["starter"].monthly_allowance_tokens == 50_000
        assert plans["business"].monthly_allowance_tokens == 5_000_000
        assert plans["enterprise"].per_account

        packs = {p.id: p for p in catalog.packs}
        assert packs["pack_1000_tokens"].tokens == 1000 and packs["pack_1000_tokens"].price_minor == 100
        assert not packs["pack_legacy_500_tokens"].active


class TestCredits:
    async def test_credit_purchase_creates_account_and_credits_once(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        account = new_id()
        request = pb.CreditPurchaseRequest(
            account_id=account,
            pack_id="pack_100k_tokens",
            tokens=100_000,
            amount_minor=900,
            currency="USD",
            payment_ref=new_id("cs"),
            payment_intent="pi_1",
            event_id="evt_1",
        )
        first = await meter.stub.CreditPurchase(request)
        again = await meter.stub.CreditPurchase(request)
        assert first.newly_credited and not again.newly_credited
        assert first.credited_tokens == again.credited_tokens == 100_000
        assert again.balance.purchased_remaining == 100_000
        assert again.balance.plan_id == "free"
        assert [(e["kind"], e["amount"]) for e in await ledger(engine, account)] == [("purchase", 100_000)]

    async def test_adjust_adds_and_removes_tokens(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 500)
        removed = await meter.stub.Adjust(
            pb.AdjustRequest(
                account_id=account, pool=pb.POOL_PURCHASED, delta=-200, reason="correction", request_id=new_id()
            )
        )
        assert removed.balance.purchased_remaining == 300
        bonus = await meter.stub.Adjust(
            pb.AdjustRequest(account_id=account, pool=pb.POOL_ALLOWANCE, delta=50, reason="bonus", request_id=new_id())
        )
        assert bonus.balance.allowance_remaining == 50

    async def test_enterprise_plan_takes_its_allowance_from_the_request(self, meter: RunningMeter) -> None:
        account = new_id()
        response = await meter.stub.SetPlan(
            pb.SetPlanRequest(account_id=account, plan_id="enterprise", monthly_allowance_tokens=12_345_678)
        )
        assert response.applied
        assert response.balance.allowance_total == 12_345_678
        assert response.balance.allowance_remaining == 12_345_678


async def test_health_service_reports_serving(meter: RunningMeter) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(meter.channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service="meter.v1.MeterService"))
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert grpc.StatusCode.OK  # channel usable
