"""The Stripe adapter through its real HTTP endpoint, the real gRPC service and real Postgres,
fed the Stripe fixtures in tests/fixtures/stripe (fields a scenario needs are set in stripe_events)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_events import deliver, event, event_id, paid_checkout, raw_fixture, signature, subscription_event

from meter import catalog
from meter.client import MeterClient
from meter.v1 import meter_pb2 as pb
from meter.webhooks.app import replay
from support import RunningMeter, balance, ledger, new_id, suite_catalog


async def stored(engine: AsyncEngine, evt: str) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT account_id, type, status, reason, payload, received_at FROM webhook_events WHERE event_id = :e"
            ),
            {"e": evt},
        )
        return [dict(row) for row in rows.mappings()]


async def purchases(engine: AsyncEngine, account: str) -> int:
    return sum(1 for e in await ledger(engine, account) if e["kind"] == "purchase")


class TestCheckout:
    async def test_the_shipped_unpaid_checkout_credits_nothing(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        payload = raw_fixture("checkout.session.completed")  # exact file bytes, signed as they are
        status, body = await deliver(meter.webhook_url, payload)
        assert (status, body["status"]) == (200, "ignored")
        [row] = await stored(engine, event_id(payload))
        assert (row["status"], row["type"], bytes(row["payload"])) == ("ignored", "checkout.session.completed", payload)
        assert row["received_at"] is not None

    async def test_paid_checkout_credits_once_though_delivered_three_times(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        account = new_id()
        payload = paid_checkout(account)
        answers = await asyncio.gather(deliver(meter.webhook_url, payload), deliver(meter.webhook_url, payload))
        answers.append(await deliver(meter.webhook_url, payload))
        assert sorted(body["status"] for _, body in answers) == ["applied", "duplicate", "duplicate"]
        assert {status for status, _ in answers} == {200}
        assert (await balance(meter.stub, account)).purchased_remaining == 1000
        assert await purchases(engine, account) == 1
        [row] = await stored(engine, event_id(payload))
        assert (row["account_id"], row["status"]) == (account, "applied")

    async def test_unpaid_then_async_payment_succeeded_credits_once(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        account, session = new_id(), new_id("cs_test")
        unpaid = paid_checkout(account, session=session, payment_status="unpaid")
        succeeded = paid_checkout(account, session=session, event_type="checkout.session.async_payment_succeeded")
        assert (await deliver(meter.webhook_url, unpaid))[1]["status"] == "ignored"
        assert (await deliver(meter.webhook_url, succeeded))[1]["status"] == "applied"
        # A completed(paid) for the same session credits nothing more.
        assert (await deliver(meter.webhook_url, paid_checkout(account, session=session)))[1]["status"] == "applied"
        assert (await balance(meter.stub, account)).purchased_remaining == 1000
        assert await purchases(engine, account) == 1

    async def test_wrong_pack_tokens_or_amount_are_rejected_and_credit_nothing(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        account = new_id()
        for payload, reason in (
            (paid_checkout(account, pack="pack_free_money"), "UNKNOWN_PACK"),
            (paid_checkout(account, tokens="1000000"), "PURCHASE_MISMATCH"),
            (paid_checkout(account, amount=1), "PURCHASE_MISMATCH"),
            (paid_checkout(account, tokens="lots"), "tokens"),
        ):
            status, body = await deliver(meter.webhook_url, payload)
            assert (status, body["status"]) == (200, "rejected")
            assert reason in body["reason"]
            [row] = await stored(engine, event_id(payload))
            assert row["status"] == "rejected" and reason in row["reason"]
        assert [e for e in await ledger(engine, account) if e["kind"] == "purchase"] == []
        assert meter.service.webhooks.outcomes["rejected"] == 4  # counted (and logged)

    async def test_a_rejected_event_replayed_after_the_catalog_is_fixed_credits_once(
        self,
        meters,
        engine: AsyncEngine,  # type: ignore[no-untyped-def]
    ) -> None:
        before = await meters()
        account = new_id()
        payload = paid_checkout(account, pack="pack_launch_offer", tokens="5000", amount=300)
        assert (await deliver(before.webhook_url, payload))[1]["status"] == "rejected"

        fixed = suite_catalog()
        packs = dict(fixed.packs) | {"pack_launch_offer": catalog.Pack("pack_launch_offer", 5000, 300, "usd", True)}
        after = await meters(catalog=replace(fixed, version="fixed", packs=packs))
        async with MeterClient(after.address) as client:
            first = await replay(client, event_id(payload))
            second = await replay(client, event_id(payload))
        assert (first.status, second.status) == ("applied", "duplicate")
        assert (await balance(after.stub, account)).purchased_remaining == 5000
        assert (await stored(engine, event_id(payload)))[0]["status"] == "applied"


class TestSignatures:
    """Anything not provably from Stripe is answered 400 and nothing is stored."""

    async def test_bad_signatures_are_refused(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account = new_id()
        payload = paid_checkout(account)
        tampered = payload.replace(b'"1000"', b'"9999"')
        for body, header in (
            (payload, signature(payload, timestamp=int(time.time()) - 301)),  # stale
            (tampered, signature(payload)),  # tampered after signing
            (payload, None),  # missing
            (payload, signature(payload, secret="whsec_someone_else")),  # wrong secret
            (b"not json", signature(b"not json")),  # authentic but not an event
        ):
            status, answer = await deliver(meter.webhook_url, body, header)
            assert (status, answer["status"]) == (400, "refused")
        assert await stored(engine, event_id(payload)) == []
        status, _ = await deliver(meter.webhook_url, b"{" + b" " * 1_100_000 + b"}")
        assert status == 413

    async def test_a_signature_dated_ahead_of_the_tolerance_is_refused(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        """The stripe library accepts any future date: a delivery dated next year would stay
        replayable until then."""
        account = new_id()
        ahead = paid_checkout(account)
        status, answer = await deliver(meter.webhook_url, ahead, signature(ahead, timestamp=int(time.time()) + 301))
        assert (status, answer["status"], answer["reason"]) == (400, "refused", "signature is dated in the future")
        assert await stored(engine, event_id(ahead)) == []
        slightly = paid_checkout(account)  # a clock a minute ahead is within the tolerance
        status, answer = await deliver(
            meter.webhook_url, slightly, signature(slightly, timestamp=int(time.time()) + 60)
        )
        assert (status, answer["status"]) == (200, "applied")


class TestSlowBodies:
    async def test_a_body_that_does_not_arrive_in_time_is_answered_408(self, meters, engine: AsyncEngine) -> None:  # type: ignore[no-untyped-def]
        """A client that sends headers and then trickles (or stops sending) its body is cut off
        after METER_BODY_TIMEOUT_SECONDS instead of holding the connection for ever."""
        meter = await meters(body_timeout_seconds=0.5)
        host, port = meter.service.webhooks.address.rsplit(":", 1)
        payload = paid_checkout(new_id())
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            head = (
                f"POST /webhooks/stripe HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Stripe-Signature: {signature(payload)}\r\nContent-Length: {len(payload)}\r\n\r\n"
            )
            writer.write(head.encode() + payload[:20])  # and then nothing more
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(4096), timeout=30)  # a deadline, not a sleep
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert await stored(engine, event_id(payload)) == []


class TestRefundsAndDisputes:
    async def _bought(self, meter: RunningMeter) -> tuple[str, str]:
        account, intent = new_id(), new_id("pi")
        payload = paid_checkout(account, pack="pack_100k_tokens", tokens="100000", amount=900, intent=intent)
        assert (await deliver(meter.webhook_url, payload))[1]["status"] == "applied"
        return account, intent

    @staticmethod
    def refunded(intent: str, cumulative: int) -> bytes:
        def set_fields(charge: dict[str, Any]) -> None:
            charge.update(payment_intent=intent, amount=900, amount_refunded=cumulative, refunded=cumulative == 900)

        return event("charge.refunded", set_fields)

    async def test_partial_then_full_refund(self, meter: RunningMeter) -> None:
        account, intent = await self._bought(meter)
        assert (await deliver(meter.webhook_url, self.refunded(intent, 270)))[1]["status"] == "applied"
        assert (await balance(meter.stub, account)).purchased_remaining == 70_000
        assert (await deliver(meter.webhook_url, self.refunded(intent, 900)))[1]["status"] == "applied"
        assert (await balance(meter.stub, account)).purchased_remaining == 0

    async def test_refund_after_the_tokens_were_spent_is_debt(self, meter: RunningMeter) -> None:
        account, intent = await self._bought(meter)
        async with MeterClient(meter.address) as client:
            async with client.reserve(
                account_id=account, model="basic", input_tokens=50_000, max_output_tokens=10
            ) as hold:
                hold.report(input_tokens=50_000, output_tokens=10)
        await deliver(meter.webhook_url, self.refunded(intent, 900))
        after = await balance(meter.stub, account)
        assert (after.debt, after.purchased_remaining, after.available) == (50_010, 0, 0)

    async def test_dispute_freezes_and_won_restores(self, meter: RunningMeter) -> None:
        account, intent = await self._bought(meter)
        created = event("charge.dispute.created", lambda d: d.update(payment_intent=intent, amount=900))
        assert (await deliver(meter.webhook_url, created))[1]["status"] == "applied"
        assert (await balance(meter.stub, account)).purchased_remaining == 0
        won = event(
            "charge.dispute.created",
            lambda d: d.update(payment_intent=intent, status="won"),
            type="charge.dispute.closed",
        )
        assert (await deliver(meter.webhook_url, won))[1]["status"] == "applied"
        assert (await balance(meter.stub, account)).purchased_remaining == 100_000


class TestSubscriptions:
    @staticmethod
    def subscription(kind: str, account: str, plan: str, created: int, start: int, end: int) -> bytes:
        return subscription_event(kind, account, plan, created=created, start=start, end=end)

    async def test_shuffled_created_updated_deleted_end_in_the_newest_state(self, meter: RunningMeter) -> None:
        now = int(time.time())
        for order in (
            ("deleted", "created", "updated"),
            ("updated", "deleted", "created"),
            ("created", "updated", "deleted"),
        ):
            account = new_id()
            events = {
                "created": self.subscription("created", account, "starter", now - 30, now - 86_400, now + 29 * 86_400),
                "updated": self.subscription("updated", account, "pro", now - 20, now - 86_400, now + 29 * 86_400),
                "deleted": self.subscription("deleted", account, "pro", now - 10, now - 86_400, now + 29 * 86_400),
            }
            for kind in order:
                assert (await deliver(meter.webhook_url, events[kind]))[0] == 200
            final = await balance(meter.stub, account)
            assert (final.plan_id, final.allowance_remaining) == ("free", 0), order

    async def test_updated_then_created_keeps_the_update(self, meter: RunningMeter) -> None:
        now, account = int(time.time()), new_id()
        updated = self.subscription("updated", account, "pro", now - 20, now - 86_400, now + 29 * 86_400)
        created = self.subscription("created", account, "starter", now - 30, now - 86_400, now + 29 * 86_400)
        await deliver(meter.webhook_url, updated)
        await deliver(meter.webhook_url, created)
        assert (await balance(meter.stub, account)).plan_id == "pro"

    async def test_invoice_paid_twice_grants_one_allowance(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        now, account = int(time.time()), new_id()
        created = self.subscription("created", account, "pro", now - 30, now - 86_400, now + 29 * 86_400)
        await deliver(meter.webhook_url, created)
        sub = json.loads(created)["data"]["object"]["id"]

        def paid(invoice: dict[str, Any]) -> None:
            invoice["status"], invoice["billing_reason"] = "paid", "subscription_cycle"
            invoice["parent"] = {"type": "subscription_details", "subscription_details": {"subscription": sub}}
            line = invoice["lines"]["data"][0]
            line["period"] = {"start": now - 86_400, "end": now + 29 * 86_400}
            line["parent"] = {"type": "subscription_item_details", "subscription_item_details": {"subscription": sub}}

        invoice = event("invoice.paid", paid)
        assert (await deliver(meter.webhook_url, invoice))[1]["status"] == "applied"
        assert (await deliver(meter.webhook_url, invoice))[1]["status"] == "duplicate"
        assert (await deliver(meter.webhook_url, event("invoice.paid", paid)))[1]["status"] == "applied"
        grants = [e["amount"] for e in await ledger(engine, account) if e["kind"] == "subscription_grant"]
        assert grants == [500_000]

    async def test_invoice_without_subscription_changes_nothing(self, meter: RunningMeter) -> None:
        status, body = await deliver(meter.webhook_url, event("invoice.paid"))
        assert (status, body["status"]) == (200, "ignored")


class TestServiceDown:
    async def test_5xx_while_meter_is_down_then_the_retry_credits_once(self, meters, database_url: str) -> None:  # type: ignore[no-untyped-def]
        import socket
        from dataclasses import replace

        from meter import bootstrap
        from meter.config import Settings
        from support import WEBHOOK_SECRET

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        settings = replace(
            Settings(), http_addr="127.0.0.1:0", stripe_webhook_secrets=(WEBHOOK_SECRET,), webhook_rpc_timeout_seconds=3
        )
        client, adapter = await bootstrap.start_webhooks(settings, target=f"127.0.0.1:{port}")
        try:
            url = f"http://{adapter.address}/webhooks/stripe"
            account = new_id()
            payload = paid_checkout(account)
            status, body = await deliver(url, payload)
            assert (status, body["status"]) == (503, "retry")
            meter = await meters(grpc_addr=f"127.0.0.1:{port}")
            status, body = await deliver(url, payload)
            assert (status, body["status"]) == (200, "applied")
            assert (await deliver(url, payload))[1]["status"] == "duplicate"
            assert (await balance(meter.stub, account)).purchased_remaining == 1000
        finally:
            await adapter.stop()
            await client.close()


class TestOrdering:
    async def test_a_refund_before_its_purchase_waits_and_is_applied_when_it_lands(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        """Answered 2xx and stored, never lost: a 503 had Stripe retry for days, and give up on
        refunds of payments meter never sold."""
        account, intent = new_id(), new_id("pi")
        purchase = paid_checkout(account, pack="pack_100k_tokens", tokens="100000", amount=900, intent=intent)
        refund = TestRefundsAndDisputes.refunded(intent, 900)
        status, body = await deliver(meter.webhook_url, refund)
        assert (status, body["status"]) == (200, "pending")
        assert (await stored(engine, event_id(refund)))[0]["status"] == "pending"
        assert (await deliver(meter.webhook_url, refund))[1]["status"] == "pending"  # redelivered: still waits
        assert (await deliver(meter.webhook_url, purchase))[1]["status"] == "applied"
        assert (await balance(meter.stub, account)).purchased_remaining == 0  # taken back as it landed
        [row] = await stored(engine, event_id(refund))
        assert (row["account_id"], row["status"]) == (account, "applied")
        assert (await deliver(meter.webhook_url, refund))[1]["status"] == "duplicate"
        assert [e["amount"] for e in await ledger(engine, account) if e["kind"] == "refund"] == [-100_000]


class TestCommands:
    """`meter webhooks --target` runs the adapter alone; `meter webhooks replay` re-runs an event."""

    async def test_adapter_alone_and_replay_from_the_command_line(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        import os
        import socket
        import sys

        from support import WEBHOOK_SECRET

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {**os.environ, "METER_HTTP_ADDR": f"127.0.0.1:{port}", "METER_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
        adapter = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meter.cli", "webhooks", "--target", meter.address,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert adapter.stdout is not None
            banner = await asyncio.wait_for(adapter.stdout.readline(), timeout=60)
            assert b"Stripe webhooks on" in banner
            account = new_id()
            payload = paid_checkout(account, tokens="1")  # rejected: the pack has 1000 tokens
            status, body = await deliver(f"http://127.0.0.1:{port}/webhooks/stripe", payload)
            assert (status, body["status"]) == (200, "rejected")
        finally:
            adapter.terminate()
            assert await adapter.wait() == 0  # SIGTERM: a clean stop

        replay = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meter.cli", "webhooks", "replay", event_id(payload), "--target", meter.address,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        output, _ = await replay.communicate()
        assert replay.returncode == 1  # still rejected: the catalog was not fixed
        assert b"rejected" in output and b"PURCHASE_MISMATCH" in output
        assert (await stored(engine, event_id(payload)))[0]["status"] == "rejected"


class TestPlansFromPrices:
    """A subscription's plan follows the Stripe price it is sold at, not its metadata alone."""

    async def test_the_plan_is_the_prices_and_the_metadata_may_leave_it_out(self, meter: RunningMeter) -> None:
        now, account = int(time.time()), new_id()
        created = subscription_event(
            "created", account, "pro", created=now, start=now - 60, end=now + 86_400 * 30, metadata_plan=""
        )
        assert (await deliver(meter.webhook_url, created))[1]["status"] == "applied"
        assert (await balance(meter.stub, account)).plan_id == "pro"

    @pytest.mark.parametrize(
        ("price", "metadata_plan", "reason"),
        [
            ("price_business_monthly", "pro", "PLAN_MISMATCH"),  # a portal switch left the metadata behind
            ("price_nobody_sells", "pro", "UNKNOWN_PRICE"),
        ],
    )
    async def test_metadata_and_price_disagreeing_is_rejected_with_a_reason(
        self, meter: RunningMeter, engine: AsyncEngine, price: str, metadata_plan: str, reason: str
    ) -> None:
        now, account = int(time.time()), new_id()
        await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
        updated = subscription_event(
            "updated", account, "pro", created=now, start=now - 60, end=now + 86_400 * 30, price=price,
            metadata_plan=metadata_plan,
        )  # fmt: skip
        status, body = await deliver(meter.webhook_url, updated)
        assert (status, body["status"]) == (200, "rejected")
        assert reason in body["reason"]
        assert (await balance(meter.stub, account)).plan_id == "starter"
        assert (await stored(engine, event_id(updated)))[0]["status"] == "rejected"

    async def test_get_catalog_lists_the_prices_of_each_plan(self, meter: RunningMeter) -> None:
        plans = {p.id: list(p.stripe_prices) for p in (await meter.stub.GetCatalog(pb.GetCatalogRequest())).plans}
        assert plans["pro"] == ["price_pro_monthly", "price_pro_yearly"] and plans["free"] == []
