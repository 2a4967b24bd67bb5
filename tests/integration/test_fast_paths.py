"""The one-statement Reserve handles only the plain case and changes nothing otherwise (the
general path, tested everywhere else, decides the rest)."""

from __future__ import annotations

from datetime import UTC, datetime

from meter.domain import ids
from meter.domain.holds import Hold, HoldStatus, NotPlaced, Pricing, ReserveParams
from meter.storage.postgres import PostgresStorage
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, funded_account, new_id, reserve_request

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def draft(account: str, amount: int, request_id: str | None = None) -> Hold:
    return Hold(
        account_id=account,
        reservation_id=ids.new_reservation_id(account),
        request_id=request_id or new_id("req"),
        params=ReserveParams("basic", amount - 1, 1, 600, {}),
        pricing=Pricing("v", 1_000_000, 1_000_000, 0, 0),
        allowance_held=amount,
        allowance_bucket=0,
        purchased_held=0,
        purchased_bucket=0,
        period_start=EPOCH,
        status=HoldStatus.OPEN,
        expires_at=EPOCH,
    )


async def test_plain_case_declines_and_replays(meter: RunningMeter) -> None:
    storage = meter.service.meter.storage
    assert isinstance(storage, PostgresStorage)

    async def fast(hold: Hold) -> object:
        return await storage.reserve_fast(hold, 3)

    account = await funded_account(meter.stub, 1600)  # 16 buckets of 100
    placed = await fast(draft(account, 100))
    assert not isinstance(placed, NotPlaced)
    hold, snapshot = placed  # type: ignore[misc]
    assert (hold.purchased_held, snapshot.held, snapshot.purchased_remaining) == (100, 100, 1500)
    assert await fast(draft(account, 101)) == NotPlaced()  # no single bucket has it: general path
    assert await fast(draft(new_id(), 1)) == NotPlaced()  # unknown account
    assert await fast(draft(account, 1, request_id=hold.request_id)) == NotPlaced()  # a replay
    assert (await balance(meter.stub, account)).held == 100  # the declines changed nothing

    owing = await funded_account(meter.stub, 100)
    spent = await meter.stub.Reserve(reserve_request(owing))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=spent.reservation_id, input_tokens=500, output_tokens=0))
    assert await fast(draft(owing, 1)) == NotPlaced()  # in debt
    await meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id))


async def test_fast_commit_rounds_like_the_domain_and_declines_the_rest(meter: RunningMeter) -> None:
    from meter import catalog

    pricing = catalog.load().pricing("gpt-4o-mini")  # weights 0.1 / 0.25, prices $0.15 / $0.60 per M
    account = await funded_account(meter.stub, 10_000)
    for input_tokens, output_tokens in ((1, 0), (3, 1), (999, 7), (1000, 1000)):
        hold = await meter.stub.Reserve(
            reserve_request(account, model="gpt-4o-mini", input_tokens=1000, max_output_tokens=1000)
        )
        charge = await meter.stub.Commit(
            pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=input_tokens, output_tokens=output_tokens)
        )
        assert charge.charged_tokens == pricing.tokens(input_tokens, output_tokens)
        assert charge.cost_micros == pricing.cost_micros(input_tokens, output_tokens)

    storage = meter.service.meter.storage
    assert isinstance(storage, PostgresStorage)

    async def fast(reservation_id: str, input_tokens: int) -> object:
        return await storage.commit_fast(account, ids.hold_id(reservation_id), input_tokens, 0)

    hold = await meter.stub.Reserve(reserve_request(account))  # 100 held
    assert await fast(hold.reservation_id, 101) is None  # overage: general path
    assert await fast(f"{account}/{'0' * 32}", 1) is None  # unknown hold
    assert await fast(hold.reservation_id, 100) is not None
    assert await fast(hold.reservation_id, 100) is None  # a replay: general path returns the first result
    replayed = await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=100))
    assert replayed.charged_tokens == 100
