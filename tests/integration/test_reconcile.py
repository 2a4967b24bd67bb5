"""`meter reconcile` against the Stripe emulator: a paid Checkout Session whose webhook never
reached meter is found in Stripe's events and credited once; a second run finds nothing to do,
and the webhook arriving after all is a duplicate."""

from __future__ import annotations

import json
import re
from typing import Any

import grpc
import stripe
from stripe_emulator import StripeEmulator
from stripe_events import WEBHOOK_SECRET, deliver

from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, eventually, new_id, run_cli

StartMeter = Any


def _shapes(printed: str) -> list[str]:
    return [re.sub(r"\d+", "<n>", line) for line in printed.strip().splitlines()]


async def a_sale_whose_webhook_is_lost(meter: RunningMeter, emulator: StripeEmulator) -> tuple[str, str]:
    """A pack sold through meter and paid at the emulator, whose endpoint for Stripe is dead:
    every event of the sale is lost. The account and the session."""
    await emulator.register_webhook("http://127.0.0.1:9/stripe/webhook", WEBHOOK_SECRET)
    account = new_id()
    opened = await meter.stub.CreateCheckoutSession(
        pb.CreateCheckoutSessionRequest(
            account_id=account,
            pack_id="pack_1000_tokens",
            success_url="https://shop.example/ok",
            cancel_url="https://shop.example/no",
            request_id=new_id("buy"),
        )
    )
    await emulator.pay(opened.session.session_id)
    return account, opened.session.session_id


async def test_a_payment_whose_webhook_was_lost_is_credited_once_by_reconciling(
    meters: StartMeter, emulator: StripeEmulator
) -> None:
    meter = await meters(stripe_api_key=emulator.api_key, stripe_api_base=emulator.url)
    account, session_id = await a_sale_whose_webhook_is_lost(meter, emulator)
    env = {"METER_STRIPE_API_KEY": emulator.api_key, "METER_STRIPE_API_BASE": emulator.url}

    code, out, err = await run_cli("reconcile", "--days", "1", "--target", meter.address, env=env)
    assert code == 0, err
    assert _shapes(out) == [
        "meter reconcile: Stripe listed <n> events of the types meter consumes",
        "meter reconcile: stored by meter before: none",
        "meter reconcile: never received, applied now: <n> applied",
    ], out  # as docs/stripe.md shows it, the numbers and the statuses found aside
    assert (await balance(meter.stub, account)).purchased_remaining == 1000

    code, out, err = await run_cli("reconcile", "--target", meter.address, env=env)
    assert code == 0, err
    assert "never received, applied now: none" in out and "stored by meter before: 1 applied" in out, out

    # The lost webhook, delivered at last: the same event, already applied.
    listed = await emulator.stripe_client().v1.events.list_async(params={"type": "checkout.session.completed"})
    [completed] = [e for e in listed.data if e.data.object.id == session_id]
    payload = json.dumps(completed.to_dict()).encode()
    assert isinstance(completed, stripe.Event)
    status, body = await deliver(meter.webhook_url, payload)
    assert (status, body["status"]) == (200, "duplicate")
    assert (await balance(meter.stub, account)).purchased_remaining == 1000


async def test_the_webhook_adapter_reconciles_on_a_schedule(meters: StartMeter, emulator: StripeEmulator) -> None:
    """With a Stripe key, the adapter reconciles by itself (every second here, hourly by
    default): the lost payment is credited, and the runs after it credit nothing more."""
    meter = await meters(stripe_api_key=emulator.api_key, stripe_api_base=emulator.url, reconcile_interval_seconds=1)
    account, session_id = await a_sale_whose_webhook_is_lost(meter, emulator)
    schedule = meter.service.webhooks.reconciling
    assert schedule is not None

    async def purchased() -> int:  # 0 until the credit opens the account
        try:
            return (await balance(meter.stub, account)).purchased_remaining
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
            return 0

    await eventually(purchased, lambda tokens: tokens == 1000)
    runs = schedule.runs

    async def runs_done() -> int:
        return schedule.runs

    await eventually(runs_done, lambda done: done >= runs + 2)
    assert (await balance(meter.stub, account)).purchased_remaining == 1000


async def test_reconcile_without_a_stripe_key_says_what_it_needs(meter: Any) -> None:
    code, _, err = await run_cli("reconcile", "--target", meter.address, env={"METER_STRIPE_API_KEY": ""})
    assert code == 1 and "METER_STRIPE_API_KEY" in err
