"""Charges are exact integers, rounded up once: balance tokens by the model's weights, cost by its
prices, both pinned at Reserve (meter_weighted_tokens and meter_cost_micros, storage/sql)."""

from __future__ import annotations

import pytest

from meter.v1 import meter_pb2 as pb
from support import RunningMeter, funded_account, reserve_request


# gpt-4o-mini: weights 0.1 and 0.25, $0.15 and $0.60 per million tokens.
@pytest.mark.parametrize(
    ("input_tokens", "output_tokens", "charged", "cost_micros"),
    [
        (0, 0, 0, 0),
        (1, 0, 1, 1),  # 0.1 token, 0.15 micro-USD: both round up
        (3, 1, 1, 2),  # 0.55 and 1.05
        (999, 7, 102, 155),  # 101.65 and 154.05
        (1000, 1000, 350, 750),  # exact
    ],
)
async def test_a_commit_is_charged_rounded_up_once(
    meter: RunningMeter, input_tokens: int, output_tokens: int, charged: int, cost_micros: int
) -> None:
    account = await funded_account(meter.stub, 10_000)
    hold = await meter.stub.Reserve(
        reserve_request(account, model="gpt-4o-mini", input_tokens=1000, max_output_tokens=1000)
    )
    assert hold.held_tokens == 350
    charge = await meter.stub.Commit(
        pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=input_tokens, output_tokens=output_tokens)
    )
    assert (charge.charged_tokens, charge.cost_micros) == (charged, cost_micros)
    assert charge.balance.purchased_remaining == 10_000 - charged


async def test_a_reserve_holds_at_least_one_token(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 10)
    hold = await meter.stub.Reserve(reserve_request(account, model="gpt-4o-mini", input_tokens=0, max_output_tokens=1))
    assert hold.held_tokens == 1  # 0.25 rounds up
