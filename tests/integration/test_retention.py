"""Retention of stored Stripe payloads (METER_WEBHOOK_PAYLOAD_RETENTION_DAYS): the sweeper deletes
the payload of an event unchanged for the window and keeps its row, so a late redelivery is still
a duplicate; a pending event is still applied when what it waits for arrives; a replay of a pruned
event says why it cannot be; `meter retention` reports and prunes. The database is the session's:
other tests' events may be pruned here too, so counts are compared, not taken as absolute."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_events import deliver, event, event_id, paid_checkout

from meter.cli import build_parser, retention_command
from meter.client import MeterClient
from meter.config import ConfigError, Settings
from meter.service.ports import Payloads
from meter.service.retention import prune
from meter.v1 import meter_pb2 as pb
from meter.webhooks.app import replay
from support import RunningMeter, balance, eventually, ledger, new_id, run_cli

WINDOW = {"webhook_payload_retention_days": 30, "sweep_interval_seconds": 0.05}


async def stored(engine: AsyncEngine, evt: str) -> dict[str, Any]:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT account_id, status, reason, payload, payload_pruned_at, pruned_payload_bytes "
                    "FROM webhook_events WHERE event_id = :e"
                ),
                {"e": evt},
            )
        ).one()
    return dict(row._mapping) | {"payload": bytes(row.payload)}


async def pruned(engine: AsyncEngine, evt: str) -> dict[str, Any]:
    """The event's row once the sweeper has pruned its payload (polled, with a deadline)."""
    return await eventually(lambda: stored(engine, evt), lambda row: row["payload_pruned_at"] is not None, within=5)


def pruned_total() -> float:
    return REGISTRY.get_sample_value("meter_webhook_payloads_pruned_total") or 0.0


def refund(intent: str) -> bytes:
    def set_fields(charge: dict[str, Any]) -> None:
        charge.update(payment_intent=intent, amount=900, amount_refunded=900, refunded=True)

    return event("charge.refunded", set_fields)


async def test_an_event_past_the_window_loses_its_payload_and_its_redelivery_is_still_a_duplicate(
    meters: Any, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meter.service.retention")
    meter: RunningMeter = await meters(**WINDOW)
    old_account, new_account = new_id(), new_id()
    old, new = paid_checkout(old_account), paid_checkout(new_account)
    counted = pruned_total()
    assert (await deliver(meter.webhook_url, old))[1]["status"] == "applied"
    meter.clock.advance(timedelta(days=20))
    assert (await deliver(meter.webhook_url, new))[1]["status"] == "applied"
    meter.clock.advance(timedelta(days=11))  # old: 31 days unchanged, new: 11

    row = await pruned(engine, event_id(old))
    assert (row["account_id"], row["status"], row["payload"]) == (old_account, "applied", b"")
    assert row["pruned_payload_bytes"] == len(old)
    assert (await stored(engine, event_id(new)))["payload"] == new  # the pass that pruned old kept it
    assert pruned_total() >= counted + 1
    [line, *_] = [r for r in caplog.records if r.name == "meter.service.retention"]  # one a pass that pruned
    assert line.getMessage().startswith("retention: pruned ")
    assert line.fields["retention_days"] == 30  # type: ignore[attr-defined]

    status, body = await deliver(meter.webhook_url, old)  # Stripe's late redelivery
    assert (status, body["status"]) == (200, "duplicate")
    assert (await balance(meter.stub, old_account)).purchased_remaining == 1000
    assert [e["kind"] for e in await ledger(engine, old_account)] == ["purchase"]
    assert (await stored(engine, event_id(old)))["payload"] == b""


async def test_a_pending_event_pruned_while_it_waits_is_applied_when_its_purchase_arrives(
    meters: Any, engine: AsyncEngine
) -> None:
    """What applies it is the waiting request, stored apart: the payload is not needed."""
    meter: RunningMeter = await meters(**WINDOW)
    account, intent = new_id(), new_id("pi")
    waiting = refund(intent)
    assert (await deliver(meter.webhook_url, waiting))[1]["status"] == "pending"
    meter.clock.advance(timedelta(days=31))
    row = await pruned(engine, event_id(waiting))
    assert (row["account_id"], row["status"]) == ("", "pending")

    purchase = paid_checkout(account, pack="pack_100k_tokens", tokens="100000", amount=900, intent=intent)
    assert (await deliver(meter.webhook_url, purchase))[1]["status"] == "applied"
    assert (await balance(meter.stub, account)).purchased_remaining == 0  # the refund took it back
    row = await stored(engine, event_id(waiting))
    assert (row["account_id"], row["status"], row["payload"]) == (account, "applied", b"")
    assert (await deliver(meter.webhook_url, waiting))[1]["status"] == "duplicate"
    assert [e["amount"] for e in await ledger(engine, account) if e["kind"] == "refund"] == [-100_000]


async def test_replaying_a_pruned_event_says_its_payload_is_gone(meters: Any, engine: AsyncEngine) -> None:
    meter: RunningMeter = await meters(**WINDOW)
    payload = paid_checkout(new_id(), tokens="1")  # rejected: the pack has 1000 tokens
    assert (await deliver(meter.webhook_url, payload))[1]["status"] == "rejected"
    meter.clock.advance(timedelta(days=31))
    await pruned(engine, event_id(payload))

    kept = await meter.stub.GetWebhookEvent(pb.GetWebhookEventRequest(event_id=event_id(payload)))
    assert (kept.status, kept.event.payload) == (pb.EVENT_STATUS_REJECTED, b"")
    assert "PURCHASE_MISMATCH" in kept.reason
    async with MeterClient(meter.address) as client:
        outcome = await replay(client, event_id(payload))
    assert outcome.status == "pruned"
    assert "retention window" in outcome.reason and "was rejected" in outcome.reason

    code, out, err = await run_cli("webhooks", "replay", event_id(payload), "--target", meter.address)
    assert code == 1, err  # a failure the operator sees, not a crash
    assert "pruned" in out and "METER_WEBHOOK_PAYLOAD_RETENTION_DAYS" in out and "Traceback" not in err


async def test_replicas_pruning_at_once_prune_each_payload_once(meters: Any, engine: AsyncEngine) -> None:
    """Passes of two replicas at the same time share the due rows: each payload is pruned by one
    of them, once, and a later pass finds nothing left to do."""
    replicas: list[RunningMeter] = [await meters(webhook_payload_retention_days=30) for _ in range(2)]
    payloads = [paid_checkout(new_id()) for _ in range(12)]
    for payload in payloads:
        assert (await deliver(replicas[0].webhook_url, payload))[1]["status"] == "applied"
    for replica in replicas:
        replica.clock.advance(timedelta(days=31))

    def passes() -> list[Coroutine[Any, Any, Payloads]]:
        return [prune(replica.service.meter, batches=None) for replica in replicas for _ in range(3)]

    first = await asyncio.gather(*passes())
    assert sum(done.count for done in first) >= len(payloads)  # and any other test's events due
    for payload in payloads:
        row = await stored(engine, event_id(payload))
        assert (row["payload"], row["pruned_payload_bytes"]) == (b"", len(payload))
    assert [done.count for done in await asyncio.gather(*passes())] == [0] * 6


async def retention(capsys: pytest.CaptureFixture[str], settings: Settings, *argv: str) -> str:
    """`meter retention ARGV` as meter.cli runs it, in a thread (it runs its own event loop)."""
    parser, _ = build_parser(["retention", *argv])
    args = parser.parse_args(["retention", *argv])
    capsys.readouterr()
    assert await asyncio.to_thread(retention_command.run, settings, args) == 0
    return capsys.readouterr().out


async def test_the_command_reports_what_is_due_prunes_it_and_reports_it(
    meters: Any, engine: AsyncEngine, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A meter whose clock is 31 days behind stores an event already due by the command's clock;
    # it prunes nothing itself (retention off).
    past: RunningMeter = await meters(webhook_payload_retention_days=0)
    past.clock.advance(timedelta(days=-31))
    payload = paid_checkout(new_id())
    assert (await deliver(past.webhook_url, payload))[1]["status"] == "applied"
    settings = Settings(database_url=database_url, db_pool_size=2, webhook_payload_retention_days=30)

    before = json.loads(await retention(capsys, settings, "--json"))
    assert before["retention_days"] == 30
    assert before["due"]["payloads"] >= 1 and before["due"]["bytes"] >= len(payload)
    report = await retention(capsys, settings)
    assert "METER_WEBHOOK_PAYLOAD_RETENTION_DAYS=30" in report
    assert f"due:       {before['due']['payloads']} payloads" in report

    off = replace(settings, webhook_payload_retention_days=0)
    assert "nothing pruned" in await retention(capsys, off, "prune")
    assert (await stored(engine, event_id(payload)))["payload"] == payload

    after = json.loads(await retention(capsys, settings, "prune", "--json", "--passes", "100"))
    now = after["pruned_now"]
    assert now == before["due"]  # nothing else prunes meanwhile: every sweeper is off or idle
    assert after["due"] == {"payloads": 0, "bytes": 0}
    assert after["pruned"] == {
        "payloads": before["pruned"]["payloads"] + now["payloads"],
        "bytes": before["pruned"]["bytes"] + now["bytes"],
    }
    row = await stored(engine, event_id(payload))
    assert (row["payload"], row["pruned_payload_bytes"]) == (b"", len(payload))
    [this_pass] = [p for p in after["passes"] if p["pruned_at"] == row["payload_pruned_at"].isoformat()]
    assert (this_pass["payloads"], this_pass["bytes"]) == (now["payloads"], now["bytes"])
    report = await retention(capsys, settings)
    assert f"pruned:    {after['pruned']['payloads']} payloads, {after['pruned']['bytes']} bytes" in report
    assert "latest passes:" in report


def test_the_setting_is_validated() -> None:
    assert Settings.from_env({}).webhook_payload_retention_days == 30
    assert Settings.from_env({"METER_WEBHOOK_PAYLOAD_RETENTION_DAYS": "0"}).webhook_payload_retention_days == 0
    for bad in ("-1", "thirty", "36501"):
        with pytest.raises(ConfigError, match="METER_WEBHOOK_PAYLOAD_RETENTION_DAYS"):
            Settings.from_env({"METER_WEBHOOK_PAYLOAD_RETENTION_DAYS": bad})
