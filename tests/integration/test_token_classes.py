"""Token classes priced apart: a call's input, cached input (cache reads), cache writes, output and
reasoning, each at its own price and weight of the hold's catalog version, charged and costed
each rounded up once over all classes. Checked against numbers computed by hand from the packaged
catalog, for two providers' price shapes:

  claude-sonnet-4-5 (Anthropic): $3 in, $0.30 cache read, $3.75 cache write, $15 out per million;
                                 weights 1, 0.1, 1.25, 5
  o4-mini (OpenAI, reasoning):   $1.10 in, $0.275 cached, $4.40 out and reasoning per million;
                                 weights 0.5, 0.125, 2, 2 (cache writes priced as input)
  gpt-4o (OpenAI):               $2.50 in, $1.25 cached, $10 out; weights 1, 0.5, 4
"""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.type import date_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.storage.audit import audit
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, expect_error, funded_account, new_id, reserve_request


def _today() -> date_pb2.Date:
    today = datetime.now(UTC).date()
    return date_pb2.Date(year=today.year, month=today.month, day=today.day)


async def test_the_catalog_publishes_each_class_price_and_weight(meter: RunningMeter) -> None:
    models = {m.id: m for m in (await meter.stub.GetCatalog(pb.GetCatalogRequest())).models}
    sonnet, o4 = models["claude-sonnet-4-5"], models["o4-mini"]
    assert (sonnet.cached_input_price_micros_per_million, sonnet.cache_write_price_micros_per_million) == (
        300_000,
        3_750_000,
    )
    assert (sonnet.cached_input_weight, sonnet.cache_write_weight, sonnet.reasoning_weight) == ("0.1", "1.25", "5")
    assert (o4.cached_input_price_micros_per_million, o4.reasoning_price_micros_per_million) == (275_000, 4_400_000)
    assert (o4.input_weight, o4.cached_input_weight, o4.cache_write_weight, o4.reasoning_weight) == (
        "0.5",
        "0.125",
        "0.5",
        "2",
    )


async def test_anthropic_cache_reads_and_writes_are_charged_and_costed_rounded_once(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    account = await funded_account(meter.stub, 100_000)
    # The prompt is 25 007 tokens (1 000 plain, 20 005 read from the cache, 4 002 written to it).
    hold = await meter.stub.Reserve(
        reserve_request(account, model="claude-sonnet-4-5", input_tokens=25_007, max_output_tokens=1_000)
    )
    assert hold.held_tokens == 25_007 + 5 * 1_000  # input at the input weight, output at 5
    commit = pb.CommitRequest(
        reservation_id=hold.reservation_id,
        input_tokens=1_000,
        cached_input_tokens=20_005,
        cache_write_tokens=4_002,
        output_tokens=503,
    )
    charge = await meter.stub.Commit(commit)
    # 1 000 + 2 000.5 + 5 002.5 + 2 515 (rounding each class up would say 10 519).
    assert charge.charged_tokens == 10_518
    # 3 000 + 6 001.5 + 15 007.5 + 7 545 micro-USD (each class rounded up: 31 555).
    assert charge.cost_micros == 31_554
    assert charge.balance.purchased_remaining == 100_000 - 10_518
    again = await meter.stub.Commit(commit)
    assert (again.charged_tokens, again.cost_micros) == (10_518, 31_554)
    other = pb.CommitRequest()
    other.CopyFrom(commit)
    other.cache_write_tokens = 4_003
    info = await expect_error(meter.stub.Commit(other), grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert "cache_write_tokens" in info.metadata.values()

    entries = await meter.stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(account_id=account, kind=pb.ENTRY_KIND_USAGE)
    )
    [entry] = entries.entries
    record = entry.usage
    assert (record.input_tokens, record.cached_input_tokens, record.cache_write_tokens, record.output_tokens) == (
        1_000,
        20_005,
        4_002,
        503,
    )
    assert (record.reasoning_tokens, record.charged_tokens, record.cost_micros) == (0, 10_518, 31_554)
    assert entry.amount == -10_518
    usage = await meter.stub.GetUsage(
        pb.GetUsageRequest(account_id=account, group_by=pb.USAGE_GROUPING_MODEL, to=_today(), **{"from": _today()})
    )
    [row] = usage.rows
    assert row.totals == pb.UsageTotals(
        requests=1,
        input_tokens=1_000,
        cached_input_tokens=20_005,
        cache_write_tokens=4_002,
        output_tokens=503,
        charged_tokens=10_518,
        cost_micros=31_554,
    )
    assert (await audit(engine, account)).clean


async def test_openai_cached_input_and_reasoning_are_priced_apart(meter: RunningMeter, engine: AsyncEngine) -> None:
    account = await funded_account(meter.stub, 100_000)
    hold = await meter.stub.Reserve(
        reserve_request(account, model="o4-mini", input_tokens=4_001, max_output_tokens=2_000)
    )
    assert hold.held_tokens == 2_001 + 4_000  # ceil(4 001 x 0.5) + 2 000 x 2 (reasoning counts in max output)
    # OpenAI reports prompt_tokens 4 001 of which 1 001 cached, completion_tokens 1 027 of which
    # 777 reasoning: each token goes in one class.
    charge = await meter.stub.Commit(
        pb.CommitRequest(
            reservation_id=hold.reservation_id,
            input_tokens=3_000,
            cached_input_tokens=1_001,
            output_tokens=250,
            reasoning_tokens=777,
        )
    )
    assert charge.charged_tokens == 3_680  # 1 500 + 125.125 + 500 + 1 554 = 3 679.125
    assert charge.cost_micros == 8_095  # 3 300 + 275.275 + 1 100 + 3 418.8 = 8 094.075
    assert charge.balance.purchased_remaining == 100_000 - 3_680

    # The same usage charged without a hold (ChargeUsage), on gpt-4o.
    unheld = await meter.stub.ChargeUsage(
        pb.ChargeUsageRequest(
            account_id=account,
            request_id=new_id("call"),
            model="gpt-4o",
            input_tokens=100,
            cached_input_tokens=2_001,
            output_tokens=10,
        )
    )
    assert (unheld.charged_tokens, unheld.cost_micros) == (1_141, 2_852)  # 1 140.5 and 2 851.25, rounded up
    assert unheld.balance.purchased_remaining == 100_000 - 3_680 - 1_141
    assert (await audit(engine, account)).clean


async def test_callers_that_send_only_input_and_output_are_charged_as_before(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 100_000)
    hold = await meter.stub.Reserve(
        reserve_request(account, model="claude-sonnet-4-5", input_tokens=1_000, max_output_tokens=400)
    )
    assert hold.held_tokens == 3_000
    charge = await meter.stub.Commit(
        pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=1_000, output_tokens=300)
    )
    assert (charge.charged_tokens, charge.cost_micros) == (2_500, 7_500)


async def test_every_class_is_bounded_like_input_and_output(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 1_000)
    hold = await meter.stub.Reserve(reserve_request(account))
    for field in ("cached_input_tokens", "cache_write_tokens", "reasoning_tokens"):
        info = await expect_error(
            meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, **{field: -1})),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
        )
        assert info.metadata["field"] == field
