"""Every refusal carries its stable reason in ErrorInfo and changes nothing."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, expect_error, funded_account, ledger, new_id, pack_purchase, reserve_request

INVALID = grpc.StatusCode.INVALID_ARGUMENT
INT64_MAX = 2**63 - 1


async def _unchanged(meter: RunningMeter, engine: AsyncEngine, account: str, before: pb.Balance, entries: int) -> None:
    after = await balance(meter.stub, account)
    assert (after.available, after.held, after.debt) == (before.available, before.held, before.debt)
    assert len(await ledger(engine, account)) == entries


class TestReserveRefusals:
    """Bad Reserve input is INVALID_ARGUMENT naming the field; nothing is held."""

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"input_tokens": -1}, "input_tokens"),
            ({"max_output_tokens": 0}, "max_output_tokens"),
            ({"max_output_tokens": -5}, "max_output_tokens"),
            ({"input_tokens": INT64_MAX}, "input_tokens"),
            ({"max_output_tokens": 100_000_001}, "max_output_tokens"),
            ({"request_id": ""}, "request_id"),
            ({"request_id": "has space"}, "request_id"),
            ({"request_id": "x" * 129}, "request_id"),
            ({"ttl_seconds": -1}, "ttl_seconds"),
            ({"ttl_seconds": 86_400 * 30}, "ttl_seconds"),
            ({"labels": {"": "empty key"}}, "labels"),
            ({"labels": {"agent": "nul\x00"}}, "labels"),  # found by the hostile-input test
            ({"labels": {"a\x00": "v"}}, "labels"),
        ],
    )
    async def test_invalid_fields(
        self, meter: RunningMeter, engine: AsyncEngine, fields: dict[str, Any], field: str
    ) -> None:
        account = await funded_account(meter.stub, 1000)
        before = await balance(meter.stub, account)
        info = await expect_error(meter.stub.Reserve(reserve_request(account, **fields)), INVALID, "INVALID_FIELD")
        assert info.metadata["field"] == field
        await _unchanged(meter, engine, account, before, entries=1)

    @pytest.mark.parametrize("account_id", ["", "a" * 129, "bad/slash", "spa ce", "ünï"])
    async def test_malformed_account_id(self, meter: RunningMeter, account_id: str) -> None:
        info = await expect_error(meter.stub.Reserve(reserve_request(account_id)), INVALID, "INVALID_FIELD")
        assert info.metadata["field"] == "account_id"

    async def test_unknown_model(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account = await funded_account(meter.stub, 1000)
        before = await balance(meter.stub, account)
        info = await expect_error(
            meter.stub.Reserve(reserve_request(account, model="gpt-17")), INVALID, "UNKNOWN_MODEL"
        )
        assert info.metadata["model"] == "gpt-17"
        await _unchanged(meter, engine, account, before, entries=1)

    async def test_unknown_account(self, meter: RunningMeter) -> None:
        account = new_id()
        info = await expect_error(
            meter.stub.Reserve(reserve_request(account)), grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND"
        )
        assert info.metadata["accountId"] == account

    async def test_insufficient_tokens_reports_available_and_required(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        account = await funded_account(meter.stub, 150)
        before = await balance(meter.stub, account)
        info = await expect_error(
            meter.stub.Reserve(reserve_request(account, input_tokens=100, max_output_tokens=100)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "INSUFFICIENT_TOKENS",
        )
        assert (info.metadata["available"], info.metadata["required"]) == ("150", "200")
        await _unchanged(meter, engine, account, before, entries=1)

    async def test_same_request_id_with_other_parameters(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account = await funded_account(meter.stub, 1000)
        first = await meter.stub.Reserve(reserve_request(account, request_id="same-key"))
        before = await balance(meter.stub, account)
        info = await expect_error(
            meter.stub.Reserve(reserve_request(account, request_id="same-key", max_output_tokens=51)),
            grpc.StatusCode.ALREADY_EXISTS,
            "IDEMPOTENCY_KEY_REUSED",
        )
        assert info.metadata["field"] == "max_output_tokens"
        assert first.held_tokens == 100
        await _unchanged(meter, engine, account, before, entries=1)


class TestSettlementRefusals:
    """Commit, Release and Extend refuse what contradicts the reservation's state."""

    async def test_commit_after_release(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account = await funded_account(meter.stub, 1000)
        hold = await meter.stub.Reserve(reserve_request(account))
        await meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id))
        info = await expect_error(
            meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=1, output_tokens=1)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "RESERVATION_RELEASED",
        )
        assert info.metadata["reservationId"] == hold.reservation_id
        assert (await balance(meter.stub, account)).purchased_remaining == 1000
        assert [e["kind"] for e in await ledger(engine, account)] == ["adjustment"]

    async def test_release_after_commit(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 1000)
        hold = await meter.stub.Reserve(reserve_request(account))
        await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=10, output_tokens=10))
        await expect_error(
            meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "RESERVATION_COMMITTED",
        )
        assert (await balance(meter.stub, account)).purchased_remaining == 980

    async def test_extend_after_commit_and_after_release(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 1000)
        committed = await meter.stub.Reserve(reserve_request(account))
        await meter.stub.Commit(
            pb.CommitRequest(reservation_id=committed.reservation_id, input_tokens=1, output_tokens=1)
        )
        await expect_error(
            meter.stub.ExtendReservation(pb.ExtendReservationRequest(reservation_id=committed.reservation_id)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "RESERVATION_COMMITTED",
        )
        released = await meter.stub.Reserve(reserve_request(account))
        await meter.stub.Release(pb.ReleaseRequest(reservation_id=released.reservation_id))
        await expect_error(
            meter.stub.ExtendReservation(pb.ExtendReservationRequest(reservation_id=released.reservation_id)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "RESERVATION_RELEASED",
        )

    async def test_unknown_and_malformed_reservation(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 10)
        missing = f"{account}/{'0' * 32}"
        info = await expect_error(
            meter.stub.Release(pb.ReleaseRequest(reservation_id=missing)),
            grpc.StatusCode.NOT_FOUND,
            "RESERVATION_NOT_FOUND",
        )
        assert info.metadata["reservationId"] == missing
        for malformed in ("", "no-slash", f"{account}/not-hex", "/" + "0" * 32):
            info = await expect_error(
                meter.stub.Commit(pb.CommitRequest(reservation_id=malformed, input_tokens=1)), INVALID, "INVALID_FIELD"
            )
            assert info.metadata["field"] == "reservation_id"

    async def test_commit_with_negative_or_absurd_usage(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 1000)
        hold = await meter.stub.Reserve(reserve_request(account))
        for usage in ({"input_tokens": -1}, {"output_tokens": -1}, {"output_tokens": INT64_MAX}):
            await expect_error(
                meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, **usage)),
                INVALID,
                "INVALID_FIELD",
            )
        assert (await balance(meter.stub, account)).held == 100

    async def test_commit_repeated_with_other_usage(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 1000)
        hold = await meter.stub.Reserve(reserve_request(account))
        await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=10, output_tokens=10))
        info = await expect_error(
            meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=10, output_tokens=11)),
            grpc.StatusCode.ALREADY_EXISTS,
            "IDEMPOTENCY_KEY_REUSED",
        )
        assert info.metadata["field"] == "output_tokens"
        assert (await balance(meter.stub, account)).purchased_remaining == 980


class TestCreditRefusals:
    """Credits are checked against the catalog; a refused credit credits nothing."""

    @pytest.mark.parametrize(
        ("fields", "reason", "field"),
        [
            ({"pack_id": "pack_nope"}, "UNKNOWN_PACK", None),
            ({"pack_id": "pack_legacy_500_tokens", "tokens": 500, "amount_minor": 60}, "UNKNOWN_PACK", None),
            ({"tokens": 999_999}, "PURCHASE_MISMATCH", "tokens"),
            ({"amount_minor": 1}, "PURCHASE_MISMATCH", "amount_minor"),
            ({"currency": "eur"}, "PURCHASE_MISMATCH", "currency"),
            ({"tokens": 0}, "INVALID_FIELD", "tokens"),
            ({"tokens": 10**10}, "INVALID_FIELD", "tokens"),
            ({"amount_minor": -100}, "INVALID_FIELD", "amount_minor"),
            ({"payment_ref": ""}, "INVALID_FIELD", "payment_ref"),
        ],
    )
    async def test_purchase_must_match_the_catalog(
        self, meter: RunningMeter, engine: AsyncEngine, fields: dict[str, Any], reason: str, field: str | None
    ) -> None:
        account = await funded_account(meter.stub, 0)
        info = await expect_error(meter.stub.CreditPurchase(pack_purchase(account, **fields)), INVALID, reason)
        if field:
            assert info.metadata["field"] == field
        assert (await balance(meter.stub, account)).purchased_remaining == 0
        assert await ledger(engine, account) == []

    async def test_an_event_type_with_a_nul_character_is_refused(self, meter: RunningMeter) -> None:
        """Found by the hostile-input test: PostgreSQL text cannot hold NUL (it answered INTERNAL)."""
        request = pb.RecordWebhookEventRequest(
            event=pb.WebhookEvent(event_id="evt_nul", type="checkout\x00", payload=b"{}"),
            status=pb.EVENT_STATUS_IGNORED,
        )
        info = await expect_error(meter.stub.RecordWebhookEvent(request), INVALID, "INVALID_FIELD")
        assert info.metadata["field"] == "event.type"

    async def test_refused_purchase_credits_nothing_and_opens_the_account_to_tell_it(self, meter: RunningMeter) -> None:
        """The customer paid: the account exists from then on, with nothing credited, so that the
        purchase.refused event has somewhere to be told."""
        account = new_id()
        await expect_error(meter.stub.CreditPurchase(pack_purchase(account, tokens=5)), INVALID, "PURCHASE_MISMATCH")
        opened = await balance(meter.stub, account)
        assert (opened.plan_id, opened.purchased_remaining, opened.available) == ("free", 0, 0)

    async def test_same_payment_ref_for_another_pack(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 0)
        await meter.stub.CreditPurchase(pack_purchase(account, payment_ref="cs_same"))
        info = await expect_error(
            meter.stub.CreditPurchase(
                pack_purchase(
                    account, payment_ref="cs_same", pack_id="pack_100k_tokens", tokens=100_000, amount_minor=900
                )
            ),
            grpc.StatusCode.ALREADY_EXISTS,
            "IDEMPOTENCY_KEY_REUSED",
        )
        assert info.metadata["field"] == "pack_id"
        assert (await balance(meter.stub, account)).purchased_remaining == 1000

    async def test_adjust_refusals(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account = await funded_account(meter.stub, 100)

        def adjust(**fields: Any) -> pb.AdjustRequest:
            values: dict[str, Any] = {"pool": pb.POOL_PURCHASED, "delta": 10, "reason": "r", "request_id": new_id()}
            values.update(fields)
            return pb.AdjustRequest(account_id=account, **values)

        for fields, field in (
            ({"delta": 0}, "delta"),
            ({"pool": pb.POOL_UNSPECIFIED}, "pool"),
            ({"reason": ""}, "reason"),
            ({"request_id": ""}, "request_id"),
            ({"delta": 10**10}, "delta"),
        ):
            info = await expect_error(meter.stub.Adjust(adjust(**fields)), INVALID, "INVALID_FIELD")
            assert info.metadata["field"] == field
        info = await expect_error(
            meter.stub.Adjust(adjust(delta=-101)), grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_TOKENS"
        )
        assert (info.metadata["available"], info.metadata["required"]) == ("100", "101")
        await expect_error(
            meter.stub.Adjust(
                pb.AdjustRequest(account_id=new_id(), pool=pb.POOL_PURCHASED, delta=1, reason="r", request_id="k")
            ),
            grpc.StatusCode.NOT_FOUND,
            "ACCOUNT_NOT_FOUND",
        )
        reused = adjust(request_id="adj-1")
        await meter.stub.Adjust(reused)
        info = await expect_error(
            meter.stub.Adjust(adjust(request_id="adj-1", delta=11)),
            grpc.StatusCode.ALREADY_EXISTS,
            "IDEMPOTENCY_KEY_REUSED",
        )
        assert info.metadata["field"] == "delta"
        assert (await balance(meter.stub, account)).purchased_remaining == 110
        assert len(await ledger(engine, account)) == 2

    async def test_set_plan_refusals(self, meter: RunningMeter) -> None:
        account = new_id()
        await expect_error(
            meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="platinum")), INVALID, "UNKNOWN_PLAN"
        )
        info = await expect_error(
            meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="pro", monthly_allowance_tokens=5)),
            INVALID,
            "INVALID_FIELD",
        )
        assert info.metadata["field"] == "monthly_allowance_tokens"
        request = pb.SetPlanRequest(account_id=account, plan_id="pro")
        request.period_start.FromSeconds(1_800_000_000)
        info = await expect_error(meter.stub.SetPlan(request), INVALID, "INVALID_FIELD")
        assert info.metadata["field"] == "period_end"
        request.period_end.FromSeconds(1_700_000_000)
        await expect_error(meter.stub.SetPlan(request), INVALID, "INVALID_FIELD")
        await expect_error(
            meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account)),
            grpc.StatusCode.NOT_FOUND,
            "ACCOUNT_NOT_FOUND",
        )
