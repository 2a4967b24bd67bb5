"""Refused purchases settle: support refunds one through meter (RefundRefusedPurchase asks the
Stripe emulator for the refund, once) or resolves it with a note, and a refund's event closes it
instead of waiting for a purchase that will never be credited; a settled refusal is never credited
by a later event of its payment."""

from __future__ import annotations

from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_emulator import StripeEmulator
from stripe_events import WEBHOOK_SECRET, deliver, paid_checkout, refunded

from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance_events, eventually, expect_error, new_id, run_cli

StartMeter = Any


async def refused_at_stripe(meter: RunningMeter, emulator: StripeEmulator, account: str) -> pb.RefusedPurchase:
    """A session the product made itself for a pack meter does not sell, paid at the emulator:
    Stripe took 300 cents, meter refused to credit it."""
    made = await emulator.unsold_session(account, pack_id="pack_x", tokens=5000, amount=300)
    await emulator.pay(made.id)
    listed = await eventually(
        lambda: meter.stub.ListRefusedPurchases(pb.ListRefusedPurchasesRequest(account_id=account)),
        lambda page: len(page.purchases) == 1,
    )
    return listed.purchases[0]


async def listed(meter: RunningMeter, account: str) -> pb.RefusedPurchase:
    [purchase] = (await meter.stub.ListRefusedPurchases(pb.ListRefusedPurchasesRequest(account_id=account))).purchases
    return purchase


async def settled_events(engine: AsyncEngine, account: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in await balance_events(engine, account) if e["type"] == "purchase.refusal_settled"]


async def test_support_refunds_a_refused_purchase_through_meter_once(
    meters: StartMeter, emulator: StripeEmulator, engine: AsyncEngine
) -> None:
    meter = await meters(stripe_api_key=emulator.api_key, stripe_api_base=emulator.url)
    await emulator.register_webhook(meter.webhook_url, WEBHOOK_SECRET)
    account = new_id()
    refused = await refused_at_stripe(meter, emulator, account)
    assert (refused.state, refused.refunded_minor) == (pb.REFUSED_PURCHASE_STATE_OPEN, 0)

    ask = pb.RefundRefusedPurchaseRequest(account_id=account, payment_ref=refused.payment_ref)
    first, again = await meter.stub.RefundRefusedPurchase(ask), await meter.stub.RefundRefusedPurchase(ask)
    assert first.purchase.state == pb.REFUSED_PURCHASE_STATE_REFUND_REQUESTED
    assert first.purchase.refund_ref.startswith("re_") and again.purchase.refund_ref == first.purchase.refund_ref

    # The refund's charge.refunded (sent by the emulator) closes it, and it is told once.
    done = await eventually(lambda: listed(meter, account), lambda p: p.state == pb.REFUSED_PURCHASE_STATE_REFUNDED)
    assert (done.refunded_minor, done.refund_ref) == (300, first.purchase.refund_ref)
    paid = await emulator.call("GET", f"/v1/payment_intents/{refused.payment_intent}")
    charge = paid["latest_charge"]
    assert (charge["amount_refunded"], charge["refunds"]["total_count"]) == (300, 1)  # refunded once, whole
    told = await settled_events(engine, account)
    assert [(e["state"], e["refunded_minor"], e["payment_ref"]) for e in told] == [
        ("refunded", 300, refused.payment_ref)
    ]
    repeated = await meter.stub.RefundRefusedPurchase(ask)
    assert repeated.purchase.state == pb.REFUSED_PURCHASE_STATE_REFUNDED
    unsettled = pb.ListRefusedPurchasesRequest(account_id=account, unsettled_only=True)
    assert not (await meter.stub.ListRefusedPurchases(unsettled)).purchases
    await expect_error(
        meter.stub.ResolveRefusedPurchase(
            pb.ResolveRefusedPurchaseRequest(account_id=account, payment_ref=refused.payment_ref, note="x")
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "REFUSED_PURCHASE_SETTLED",
    )


async def test_a_resolved_refusal_is_never_credited_by_a_later_event(meter: RunningMeter, engine: AsyncEngine) -> None:
    account, session = new_id(), f"cs_test_{new_id()}"
    mismatched = paid_checkout(account, tokens="999", session=session)  # the pack sells 1 000
    assert (await deliver(meter.webhook_url, mismatched))[1]["status"] == "rejected"

    code, out, err = await run_cli(
        "purchases", "resolve", account, session, "--note", "tokens given by Adjust adj-7", "--target", meter.address
    )
    assert code == 0, err
    assert f"{session} ({account}): resolved, note: tokens given by Adjust adj-7" in out
    again = await meter.stub.ResolveRefusedPurchase(
        pb.ResolveRefusedPurchaseRequest(account_id=account, payment_ref=session, note="another note")
    )
    assert (again.purchase.state, again.purchase.note) == (
        pb.REFUSED_PURCHASE_STATE_RESOLVED,
        "tokens given by Adjust adj-7",
    )
    assert again.purchase.settled_by and again.purchase.settled_time.seconds > 0
    told = await settled_events(engine, account)
    assert [(e["state"], e["note"]) for e in told] == [("resolved", "tokens given by Adjust adj-7")]

    # The same payment with the terms as sold would credit an open refusal after all: not this one.
    status, body = await deliver(meter.webhook_url, paid_checkout(account, session=session))
    assert (status, body["status"]) == (200, "rejected") and "REFUSED_PURCHASE_SETTLED" in body["reason"]
    refused_balance = await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))
    assert refused_balance.balance.purchased_remaining == 0
    await expect_error(
        meter.stub.RefundRefusedPurchase(pb.RefundRefusedPurchaseRequest(account_id=account, payment_ref=session)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "STRIPE_NOT_CONFIGURED",  # this server has no Stripe key; with one, a resolved refusal is not refunded
    )


async def test_a_refund_made_in_stripes_dashboard_closes_the_refusal(meter: RunningMeter, engine: AsyncEngine) -> None:
    account, session, intent = new_id(), f"cs_test_{new_id()}", f"pi_{new_id()}"
    assert (await deliver(meter.webhook_url, paid_checkout(account, tokens="999", session=session, intent=intent)))[1][
        "status"
    ] == "rejected"

    partly = refunded(intent, 50, 100, charge=f"ch_{new_id()}")
    assert (await deliver(meter.webhook_url, partly))[1]["status"] == "applied"  # not left pending
    half = await listed(meter, account)
    assert (half.state, half.refunded_minor) == (pb.REFUSED_PURCHASE_STATE_OPEN, 50)
    status, body = await deliver(meter.webhook_url, paid_checkout(account, session=session, intent=intent))
    assert body["status"] == "rejected" and "partly refunded" in body["reason"]  # half its money went back

    whole = refunded(intent, 100, 100, charge=f"ch_{new_id()}")
    assert (await deliver(meter.webhook_url, whole))[1]["status"] == "applied"
    assert (await deliver(meter.webhook_url, whole))[1]["status"] == "duplicate"
    done = await listed(meter, account)
    assert (done.state, done.refunded_minor, done.settled_by) == (pb.REFUSED_PURCHASE_STATE_REFUNDED, 100, "")
    assert [(e["state"], e["refunded_minor"]) for e in await settled_events(engine, account)] == [("refunded", 100)]


async def test_settling_names_what_it_cannot_settle(meters: StartMeter, emulator: StripeEmulator) -> None:
    meter = await meters(stripe_api_key=emulator.api_key, stripe_api_base=emulator.url)
    account, session = new_id(), f"cs_test_{new_id()}"
    await expect_error(
        meter.stub.RefundRefusedPurchase(pb.RefundRefusedPurchaseRequest(account_id=account, payment_ref=session)),
        grpc.StatusCode.NOT_FOUND,
        "REFUSED_PURCHASE_NOT_FOUND",
    )
    assert (await deliver(meter.webhook_url, paid_checkout(account, tokens="999", session=session)))[1][
        "status"
    ] == "rejected"
    await expect_error(
        meter.stub.ResolveRefusedPurchase(
            pb.ResolveRefusedPurchaseRequest(account_id=account, payment_ref=session, note=" ")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )
    # Its PaymentIntent is unknown to Stripe: Stripe refuses, and the purchase is as it was.
    await expect_error(
        meter.stub.RefundRefusedPurchase(pb.RefundRefusedPurchaseRequest(account_id=account, payment_ref=session)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "STRIPE_REFUSED",
    )
    assert (await listed(meter, account)).state == pb.REFUSED_PURCHASE_STATE_OPEN
