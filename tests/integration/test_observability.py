"""Metrics at /metrics change as RPCs and webhooks run, and every RPC and webhook logs one
structured line whose request id is the one the caller got back."""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta
from pathlib import Path

import aiohttp
import grpc
import pytest
from conftest import StartMeter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_events import deliver, paid_checkout

from meter import logs
from meter.domain.callers import hash_token, new_token
from meter.service.sweeper import sweep_once
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, expect_error, funded_account, new_id, pack_purchase, reserve_request

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(meter: RunningMeter) -> Samples:
    url = f"http://{meter.service.webhooks.address}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_metrics_follow_the_calls(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 1000)
    before = await scrape(meter)

    hold = await meter.stub.Reserve(reserve_request(account, input_tokens=100, max_output_tokens=100))
    replayed = reserve_request(account, input_tokens=50, max_output_tokens=50)
    await meter.stub.Reserve(replayed)
    await meter.stub.Reserve(replayed)  # a replay: the same hold, no new tokens held
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=60, output_tokens=30))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=60, output_tokens=30))
    await expect_error(
        meter.stub.Reserve(reserve_request(account, input_tokens=5000)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_TOKENS",
    )
    purchase = pack_purchase(account)
    await meter.stub.CreditPurchase(purchase)
    await meter.stub.ReverseCredit(
        pb.ReverseCreditRequest(
            kind=pb.REVERSAL_KIND_REFUND, account_id=account, payment_ref=purchase.payment_ref, amount_minor=50
        )
    )
    status, _ = await deliver(meter.webhook_url, paid_checkout(account))
    assert status == 200
    status, _ = await deliver(meter.webhook_url, b"{}", header="t=1,v1=forged")
    assert status == 400

    after = await scrape(meter)
    assert delta(before, after, "meter_rpcs_total", method="Reserve", code="OK") == 3
    assert delta(before, after, "meter_rpcs_total", method="Reserve", code="FAILED_PRECONDITION") == 1
    assert delta(before, after, "meter_rpcs_total", method="Commit", code="OK") == 2
    assert delta(before, after, "meter_rpc_duration_seconds_count", method="Commit", code="OK") == 2
    assert delta(before, after, "meter_rpc_duration_seconds_bucket", method="Commit", code="OK", le="+Inf") == 2
    assert delta(before, after, "meter_rejections_total", method="Reserve", reason="INSUFFICIENT_TOKENS") == 1
    # Replays move no tokens: one hold of 200 plus one of 100, one charge of 90.
    assert delta(before, after, "meter_tokens_total", movement="held") == 300
    assert delta(before, after, "meter_tokens_total", movement="charged") == 90
    assert delta(before, after, "meter_tokens_total", movement="credited") == 2000  # the RPC and the webhook
    assert delta(before, after, "meter_tokens_total", movement="reversed") == 500
    # Both purchases went through CreditPurchase: the RPC here and the webhook adapter's call.
    assert delta(before, after, "meter_rpcs_total", method="CreditPurchase", code="OK") == 2
    assert delta(before, after, "meter_webhook_events_total", type="checkout.session.completed", status="applied") == 1
    assert delta(before, after, "meter_webhook_events_total", type="-", status="refused") == 1
    assert value(after, "meter_db_connections_max", pool="main") > 0  # one pool
    assert (
        0
        <= value(after, "meter_db_connections_in_use", pool="main")
        <= value(after, "meter_db_connections_max", pool="main")
    )


async def test_open_holds_and_sweeper_lag(meter: RunningMeter, engine: AsyncEngine) -> None:
    account = await funded_account(meter.stub, 1000)
    await meter.stub.Reserve(reserve_request(account, ttl_seconds=1))
    await sweep_once(meter.service.meter)
    samples = await scrape(meter)
    assert value(samples, "meter_open_holds") == await _open_holds(engine)
    assert value(samples, "meter_open_holds") >= 1

    meter.clock.advance(timedelta(minutes=2))  # the hold is now two minutes past its expiry
    await sweep_once(meter.service.meter)
    assert value(await scrape(meter), "meter_sweeper_lag_seconds") >= 119
    while (await sweep_once(meter.service.meter)).holds_expired:
        pass
    await sweep_once(meter.service.meter)
    samples = await scrape(meter)
    assert value(samples, "meter_sweeper_lag_seconds") == 0
    assert value(samples, "meter_open_holds") == await _open_holds(engine)


async def test_one_json_line_per_rpc_and_webhook_with_the_returned_request_id(
    meter: RunningMeter, caplog: pytest.LogCaptureFixture
) -> None:
    account = await funded_account(meter.stub, 1000)
    caplog.set_level(logging.INFO)
    caplog.clear()
    call = meter.stub.Reserve(reserve_request(account))
    hold = await call
    request_id = dict(await call.trailing_metadata())["x-request-id"]
    await expect_error(
        meter.stub.Reserve(reserve_request(account, input_tokens=5000), metadata=(("x-request-id", "proxy-9"),)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_TOKENS",
    )
    await meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id))
    status, body = await deliver(meter.webhook_url, paid_checkout(account))
    assert status == 200

    formatter = logs.json_formatter()
    lines = [json.loads(formatter.format(r)) for r in caplog.records if r.name in ("meter.rpc", "meter.webhooks.app")]
    rpcs = [line for line in lines if line["logger"] == "meter.rpc" and line["account"] == account]
    assert [(r["method"], r["code"], r["reason"]) for r in rpcs] == [
        ("Reserve", "OK", ""),
        ("Reserve", "FAILED_PRECONDITION", "INSUFFICIENT_TOKENS"),
        ("Release", "OK", ""),
        ("CreditPurchase", "OK", ""),  # the webhook adapter's call
    ]
    assert rpcs[0]["request_id"] == request_id and rpcs[1]["request_id"] == "proxy-9"
    assert {r["caller"] for r in rpcs} == {"anonymous"}
    for line in rpcs:
        assert line["level"] in ("INFO", "WARNING") and line["time"].endswith("+00:00")
        assert isinstance(line["latency_ms"], float) and line["latency_ms"] > 0
    webhooks = [line for line in lines if line["logger"] == "meter.webhooks.app"]
    assert len(webhooks) == 1
    hook = webhooks[0]
    assert hook["method"] == "POST /webhooks/stripe"
    assert (hook["type"], hook["status"], hook["account"], hook["http_status"]) == (
        "checkout.session.completed",
        "applied",
        account,
        200,
    )
    assert hook["request_id"] == body["request_id"] and hook["latency_ms"] > 0


async def _open_holds(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT count(*) FROM holds WHERE status = 'open'"))).scalar_one())


async def test_rpc_log_failures_only_leaves_out_the_calls_that_succeeded(
    meters: StartMeter, caplog: pytest.LogCaptureFixture
) -> None:
    meter = await meters(rpc_log="failures")
    account = await funded_account(meter.stub, 100)
    caplog.set_level(logging.INFO)
    caplog.clear()
    await meter.stub.Reserve(reserve_request(account, input_tokens=10, max_output_tokens=10))
    await expect_error(
        meter.stub.Reserve(reserve_request(account, input_tokens=500)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_TOKENS",
    )
    logged = [r.fields for r in caplog.records if r.name == "meter.rpc"]  # type: ignore[attr-defined]
    assert [(f["method"], f["code"], f["account"]) for f in logged] == [("Reserve", "FAILED_PRECONDITION", account)]


def _shown_log_lines() -> list[dict[str, object]]:
    """The log lines docs/operate.md shows, as JSON."""
    operate = (Path(__file__).parents[2] / "docs" / "operate.md").read_text()
    block = operate.split("## Logs", 1)[1].split("```\n", 1)[1].split("```", 1)[0]
    return [json.loads(line) for line in block.splitlines() if line.startswith("{")]


def _masked(line: dict[str, object], account: str) -> list[tuple[str, object]]:
    """The line's fields in order, the time, the latency, the request id and the account masked."""
    masked = {
        **line,
        "time": "<time>",
        "latency_ms": "<ms>",
        "request_id": "<id>",
        "message": re.sub(r"[0-9.]+ ms$", "<ms> ms", str(line["message"])),
    }
    return [(key, "acme" if value == account else value) for key, value in masked.items()]


async def test_the_log_lines_the_docs_show_are_what_meter_writes(
    meters: StartMeter, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/operate.md shows an operator's SetPlan and a GetBalance without a token, as logged."""
    token = new_token()
    callers = f'[[caller]]\nname = "ops"\nrole = "operator"\ntoken_sha256 = "{hash_token(token)}"\n'
    meter = await meters(callers_toml=callers, webhook_token=token)
    account = new_id()
    caplog.set_level(logging.INFO)
    caplog.clear()
    ops = (("authorization", f"Bearer {token}"),)
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"), metadata=ops)
    await expect_error(
        meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account)),
        grpc.StatusCode.UNAUTHENTICATED,
        "MISSING_CREDENTIALS",
    )
    formatter = logs.json_formatter()
    written = [json.loads(formatter.format(r)) for r in caplog.records if r.name == "meter.rpc"]
    ours = [line for line in written if line.get("account") == account]
    assert [_masked(line, account) for line in ours] == [_masked(line, "acme") for line in _shown_log_lines()]
