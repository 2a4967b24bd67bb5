"""Selling packs through Checkout Sessions meter creates (CreateCheckoutSession), against a real
Stripe API emulator: localstripe, with the Checkout Sessions it lacks added on top of it
(tests/localstripe_checkout.py). The session is created by meter's stripe-python client, paid at
the emulator, and the checkout.session.completed the emulator signs and sends is what credits it.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_emulator import StripeEmulator
from stripe_events import WEBHOOK_SECRET, deliver, paid_checkout

from meter.client import MeterClient, MeterRpcError
from meter.v1 import meter_pb2 as pb
from support import (
    RunningMeter,
    balance,
    balance_events,
    database_now,
    error_info,
    eventually,
    expect_error,
    ledger,
    new_id,
    run_cli,
    suite_catalog,
)

StartMeter = Any
OK, CANCEL = "https://shop.example/bought", "https://shop.example/pricing"


async def selling(meters: StartMeter, emulator: StripeEmulator, **overrides: Any) -> RunningMeter:
    """A meter that sells through the emulator and receives its webhooks."""
    meter = await meters(stripe_api_key=emulator.api_key, stripe_api_base=emulator.url, **overrides)
    await emulator.register_webhook(meter.webhook_url, WEBHOOK_SECRET)
    return meter


def checkout(account: str, request_id: str, pack: str = "pack_1000_tokens") -> pb.CreateCheckoutSessionRequest:
    return pb.CreateCheckoutSessionRequest(
        account_id=account, pack_id=pack, success_url=OK, cancel_url=CANCEL, request_id=request_id
    )


async def purchased(meter: RunningMeter, account: str, tokens: int) -> pb.Balance:
    """The account's balance once the webhook (sent about a second after payment) has credited
    (until then the account may not exist: its first credit opens it)."""

    async def current() -> pb.Balance | None:
        try:
            return await balance(meter.stub, account)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return None

    found = await eventually(current, lambda b: b is not None and b.purchased_remaining == tokens)
    assert found is not None
    return found


async def test_a_session_sold_through_the_rpc_is_paid_at_stripe_and_credited_once(
    meters: StartMeter, emulator: StripeEmulator, engine: AsyncEngine
) -> None:
    meter = await selling(meters, emulator)
    account, request_id = new_id(), new_id("buy")
    opened = await meter.stub.CreateCheckoutSession(checkout(account, request_id))
    session = opened.session
    assert opened.created and session.session_id.startswith("cs_") and session.url
    assert (session.pack_id, session.tokens, session.price_minor, session.currency) == (
        "pack_1000_tokens",
        1000,
        100,
        "usd",
    )
    assert session.catalog_version == suite_catalog().version and session.status == pb.CHECKOUT_STATUS_OPEN
    at_stripe = await emulator.call("GET", f"/v1/checkout/sessions/{session.session_id}")
    assert (at_stripe["amount_total"], at_stripe["currency"], at_stripe["client_reference_id"]) == (100, "usd", account)
    assert at_stripe["metadata"] == {
        "type": "token_pack_purchase",
        "account_id": account,
        "pack_id": "pack_1000_tokens",
        "tokens": "1000",
        "catalog_version": session.catalog_version,
        "request_id": request_id,
    }

    replayed = await meter.stub.CreateCheckoutSession(checkout(account, request_id))
    assert (replayed.created, replayed.session.session_id, replayed.session.url) == (
        False,
        session.session_id,
        session.url,
    )

    paid = await emulator.pay(session.session_id)
    credited = await purchased(meter, account, 1000)
    assert credited.plan_id == "free"  # opened by its first credit, on the (suite's) default plan
    purchases = [e for e in await ledger(engine, account) if e["kind"] == "purchase"]
    assert [(e["amount"], e["ref"]) for e in purchases] == [(1000, session.session_id)]

    # Stripe delivers at least once: the same event again changes nothing.
    async with engine.connect() as connection:
        payload = (
            await connection.execute(
                text(
                    "SELECT payload FROM webhook_events WHERE account_id = :a AND type = 'checkout.session.completed'"
                ),
                {"a": account},
            )
        ).scalar_one()
    assert (await deliver(meter.webhook_url, bytes(payload)))[1]["status"] == "duplicate"
    assert (await balance(meter.stub, account)).purchased_remaining == 1000
    after = await meter.stub.CreateCheckoutSession(checkout(account, request_id))
    assert after.session.status == pb.CHECKOUT_STATUS_PAID and paid["payment_intent"]


async def test_a_request_id_is_one_sale(meters: StartMeter, emulator: StripeEmulator) -> None:
    meter = await selling(meters, emulator)
    account, request_id = new_id(), new_id("buy")
    await meter.stub.CreateCheckoutSession(checkout(account, request_id))
    info = await expect_error(
        meter.stub.CreateCheckoutSession(checkout(account, request_id, pack="pack_100k_tokens")),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert info.metadata["field"] == "pack_id"
    await expect_error(
        meter.stub.CreateCheckoutSession(checkout(account, new_id("buy"), pack="pack_legacy_500_tokens")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_PACK",
    )
    for field, url in (
        ("success_url", "javascript:alert(1)"),
        ("success_url", f" {OK}"),  # stored and sent raw before: only the exact text is a URL
        ("cancel_url", f"{CANCEL}\t"),
        ("cancel_url", "https://shop.example/pri\ncing"),
        ("success_url", "https://user:secret@shop.example/bought"),
        ("success_url", "https://shop.example:99999/bought"),
        ("success_url", "https:///bought"),
    ):
        bad_url = replace_field(checkout(account, new_id("buy")), **{field: url})
        info = await expect_error(
            meter.stub.CreateCheckoutSession(bad_url), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"
        )
        assert info.metadata["field"] == field, url


def replace_field(request: pb.CreateCheckoutSessionRequest, **fields: str) -> pb.CreateCheckoutSessionRequest:
    changed = pb.CreateCheckoutSessionRequest()
    changed.CopyFrom(request)
    for name, value in fields.items():
        setattr(changed, name, value)
    return changed


async def test_open_sessions_and_sessions_per_hour_are_limited_with_a_retry_delay(
    meters: StartMeter, emulator: StripeEmulator
) -> None:
    meter = await selling(meters, emulator, checkout_open_sessions=2, checkout_sessions_per_hour=3)
    account = new_id()
    first = await meter.stub.CreateCheckoutSession(checkout(account, "buy-1"))
    second = await meter.stub.CreateCheckoutSession(checkout(account, "buy-2"))
    async with MeterClient(meter.address, rate_limit_wait_seconds=0) as client:
        with pytest.raises(MeterRpcError) as refused:
            await client.create_checkout_session(
                account_id=account, pack_id="pack_1000_tokens", success_url=OK, cancel_url=CANCEL, request_id="buy-3"
            )
        open_limit = refused.value
        # A replay is not a new session: it is answered, whatever the limits.
        again = await client.create_checkout_session(
            account_id=account, pack_id="pack_1000_tokens", success_url=OK, cancel_url=CANCEL, request_id="buy-1"
        )
        assert again.session.session_id == first.session.session_id

        for paid in (first, second):  # paid: no longer open
            await emulator.pay(paid.session.session_id)
        await purchased(meter, account, 2000)
        await meter.stub.CreateCheckoutSession(checkout(account, "buy-3"))
        with pytest.raises(MeterRpcError) as refused:
            await client.create_checkout_session(
                account_id=account, pack_id="pack_1000_tokens", success_url=OK, cancel_url=CANCEL, request_id="buy-4"
            )
        hourly = refused.value

    assert (open_limit.code, open_limit.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert open_limit.metadata == {"limit": "openCheckoutSessions", "value": "2"}
    # The first open session stops taking payment after its 30 minutes (and Stripe's margin).
    assert open_limit.retry_delay is not None and 29 * 60 < open_limit.retry_delay <= 31 * 60
    assert hourly.metadata == {"limit": "checkoutSessionsPerHour", "value": "3"}
    assert hourly.retry_delay is not None and 59 * 60 < hourly.retry_delay <= 3600

    meter.clock.advance(timedelta(hours=1))  # every session expired and out of the hour
    opened = await meter.stub.CreateCheckoutSession(checkout(account, "buy-4"))
    assert opened.created


async def test_concurrent_requests_cannot_pass_a_limit_together(meters: StartMeter, emulator: StripeEmulator) -> None:
    meter = await selling(meters, emulator, checkout_open_sessions=2)
    account = new_id()
    answers = await asyncio.gather(
        *(meter.stub.CreateCheckoutSession(checkout(account, f"buy-{n}")) for n in range(6)), return_exceptions=True
    )
    opened = [a for a in answers if isinstance(a, pb.CreateCheckoutSessionResponse)]
    refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert len(opened) == 2 and len({a.session.session_id for a in opened}) == 2
    assert len(refused) == 4 and {error_info(e).reason for e in refused} == {"RATE_LIMITED"}


async def test_a_price_change_between_sale_and_payment_does_not_reject_the_paid_session(
    meters: StartMeter, emulator: StripeEmulator, engine: AsyncEngine
) -> None:
    before = await selling(meters, emulator)
    account = new_id()
    sold = (await before.stub.CreateCheckoutSession(checkout(account, new_id("buy"), pack="pack_100k_tokens"))).session
    await before.stop()

    catalog = suite_catalog()
    repriced = replace(catalog.packs["pack_100k_tokens"], tokens=90_000, price_minor=1200)
    after = await selling(
        meters,
        emulator,
        catalog=replace(catalog, version="2027-01-01.1", packs={**catalog.packs, repriced.id: repriced}),
    )
    await emulator.pay(sold.session_id)
    credited = await purchased(after, account, 100_000)  # as sold: 100 000 tokens for $9.00
    assert credited.purchased_remaining == 100_000
    async with engine.connect() as connection:
        refused = (
            await connection.execute(
                text("SELECT count(*) FROM refused_purchases WHERE account_id = :a"), {"a": account}
            )
        ).scalar_one()
    assert refused == 0
    # A new sale is made at the new price.
    resold = await after.stub.CreateCheckoutSession(checkout(account, new_id("buy"), pack="pack_100k_tokens"))
    assert (resold.session.tokens, resold.session.price_minor, resold.session.catalog_version) == (
        90_000,
        1200,
        "2027-01-01.1",
    )


async def test_a_paid_purchase_meter_refuses_is_listed_for_support(
    meters: StartMeter, emulator: StripeEmulator, engine: AsyncEngine
) -> None:
    meter = await selling(meters, emulator)
    account = new_id()
    # A session the product's own endpoint made, as the old system did, for a pack meter does not
    # sell: Stripe takes the payment; meter refuses to credit it and keeps it for a refund.
    made = await emulator.unsold_session(account, pack_id="pack_launch_offer", tokens=5000, amount=300)
    paid = await emulator.pay(made.id)
    listed = await eventually(
        lambda: meter.stub.ListRefusedPurchases(pb.ListRefusedPurchasesRequest(account_id=account)),
        lambda page: len(page.purchases) == 1,
    )
    refused = listed.purchases[0]
    assert (refused.payment_ref, refused.pack_id, refused.tokens, refused.amount_minor, refused.currency) == (
        made.id,
        "pack_launch_offer",
        5000,
        300,
        "usd",
    )
    assert (refused.reason, refused.payment_intent) == ("UNKNOWN_PACK", paid["payment_intent"])
    assert "pack_launch_offer" in refused.message and refused.event_id
    assert (await balance(meter.stub, account)).purchased_remaining == 0

    # Another account's refusal, from a signed event: all accounts listed newest first, a page at a time.
    other = new_id()
    await deliver(meter.webhook_url, paid_checkout(other, tokens="999"))
    everyone = await meter.stub.ListRefusedPurchases(pb.ListRefusedPurchasesRequest(page_size=1))
    assert [(p.account_id, p.reason) for p in everyone.purchases] == [(other, "PURCHASE_MISMATCH")]
    following = await meter.stub.ListRefusedPurchases(
        pb.ListRefusedPurchasesRequest(page_size=1, page_token=everyone.next_page_token)
    )
    assert following.purchases[0].account_id == account

    code, out, err = await run_cli("purchases", "refused", "--account", account, "--target", meter.address)
    assert code == 0, err
    assert made.id in out and "UNKNOWN_PACK" in out and paid["payment_intent"] in out and "300 usd" in out


async def test_without_a_stripe_key_meter_does_not_sell(meter: RunningMeter) -> None:
    await expect_error(
        meter.stub.CreateCheckoutSession(checkout(new_id(), new_id("buy"))),
        grpc.StatusCode.FAILED_PRECONDITION,
        "STRIPE_NOT_CONFIGURED",
    )


async def test_stripe_refusing_the_key_is_a_clear_error_and_sells_nothing(
    meters: StartMeter, emulator: StripeEmulator
) -> None:
    meter = await meters(stripe_api_key="rk_not_a_secret_key", stripe_api_base=emulator.url)
    account, request_id = new_id(), new_id("buy")
    info = await expect_error(
        meter.stub.CreateCheckoutSession(checkout(account, request_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "STRIPE_REFUSED",
    )
    assert info.metadata["stripeCode"]
    await expect_error(
        meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account)),
        grpc.StatusCode.NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    )  # the refused call changed nothing
    fixed = await selling(meters, emulator)
    opened = await fixed.stub.CreateCheckoutSession(checkout(account, request_id))  # the same request_id, now sold
    assert opened.created and opened.session.session_id


def _masked(text: str) -> list[str]:
    """Lines as the docs show them, times and Stripe ids masked, runs of spaces as one."""
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "<time>", text)
    text = re.sub(r"\b(pi|cs)_\w+", r"<\1>", text)
    return [" ".join(line.split()) for line in text.strip().splitlines()]


async def test_the_docs_listing_of_refused_purchases_is_what_the_cli_prints(meter: RunningMeter) -> None:
    """docs/stripe.md shows `meter purchases refused` for a pack meter does not sell; this makes
    that purchase (account acme, as shown) and compares the listing line by line."""
    docs = (Path(__file__).parents[2] / "docs" / "stripe.md").read_text()
    block = docs.split("$ meter purchases refused", 1)[1].split("```", 1)[0]
    shown = block.split("\n", 1)[1]  # the lines after the command
    refused = paid_checkout("acme", pack="pack_launch_offer", tokens="5000", amount=300)
    assert (await deliver(meter.webhook_url, refused))[1]["status"] == "rejected"
    code, out, err = await run_cli("purchases", "refused", "--account", "acme", "--target", meter.address)
    assert code == 0, err
    assert _masked(out) == _masked(shown)


async def test_a_sold_session_is_credited_once_to_the_account_it_was_sold_to(
    meters: StartMeter, emulator: StripeEmulator, engine: AsyncEngine
) -> None:
    """The attack: one payment, two correctly signed events, the first with its metadata's account
    edited. The edited one is refused (filed under the buyer, listed), the buyer's credits the
    payment once and resolves that refusal; the edited one again changes nothing."""
    meter = await meters(stripe_api_key=emulator.api_key, stripe_api_base=emulator.url)
    buyer, other = new_id(), new_id()
    sold = (await meter.stub.CreateCheckoutSession(checkout(buyer, new_id("buy"), pack="pack_100k_tokens"))).session
    intent = f"pi_{new_id('x')}"

    def paid(account: str, event_type: str) -> bytes:
        return paid_checkout(
            account,
            pack="pack_100k_tokens",
            tokens="100000",
            amount=900,
            session=sold.session_id,
            intent=intent,
            event_type=event_type,
        )

    edited = await deliver(meter.webhook_url, paid(other, "checkout.session.completed"))
    assert edited[1]["status"] == "rejected" and "meter sold the session to" in edited[1]["reason"]
    listed = (await meter.stub.ListRefusedPurchases(pb.ListRefusedPurchasesRequest(account_id=buyer))).purchases
    assert [(p.account_id, p.payment_ref, p.payment_intent, p.reason) for p in listed] == [
        (buyer, sold.session_id, intent, "PURCHASE_MISMATCH")
    ]
    await expect_error(
        meter.stub.GetBalance(pb.GetBalanceRequest(account_id=other)), grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND"
    )

    assert (await deliver(meter.webhook_url, paid(buyer, "checkout.session.async_payment_succeeded")))[1][
        "status"
    ] == "applied"
    assert (await balance(meter.stub, buyer)).purchased_remaining == 100_000
    listed = (await meter.stub.ListRefusedPurchases(pb.ListRefusedPurchasesRequest(page_size=1000))).purchases
    assert sold.session_id not in {p.payment_ref for p in listed}  # credited: nothing to refund
    told = [(e["type"], e["payload"]["payment_ref"]) for e in await balance_events(engine, buyer)]
    assert told[-3:] == [
        ("purchase.refused", sold.session_id),
        ("purchase.credited", sold.session_id),
        ("purchase.refusal_resolved", sold.session_id),
    ]

    again = await deliver(meter.webhook_url, paid(other, "checkout.session.completed"))  # a new event id
    assert again[1]["status"] == "rejected"
    listed = (await meter.stub.ListRefusedPurchases(pb.ListRefusedPurchasesRequest(page_size=1000))).purchases
    assert sold.session_id not in {p.payment_ref for p in listed}
    assert (await balance(meter.stub, buyer)).purchased_remaining == 100_000
    async with engine.connect() as connection:
        credits = (
            await connection.execute(
                text("SELECT account_id, sum(amount) FROM ledger_entries WHERE ref = :ref GROUP BY 1"),
                {"ref": sold.session_id},
            )
        ).all()
    assert [tuple(row) for row in credits] == [(buyer, 100_000)]


async def test_a_packs_expiry_is_pinned_at_sale(
    meters: StartMeter, emulator: StripeEmulator, engine: AsyncEngine
) -> None:
    """A session sold while the pack's tokens expired 30 days after purchase is credited so, though
    by its payment the catalog says a year: its tokens are a grant of their own, expiring 30 days
    after the credit (and drawn before purchased tokens, which never expire)."""
    catalog = suite_catalog()
    month = replace(catalog.packs["pack_100k_tokens"], expires_after_days=30)
    before = await selling(meters, emulator, catalog=replace(catalog, packs={**catalog.packs, month.id: month}))
    account = new_id()
    sold = (await before.stub.CreateCheckoutSession(checkout(account, new_id("buy"), pack="pack_100k_tokens"))).session
    await before.stop()

    year = replace(month, expires_after_days=365)
    after = await selling(
        meters, emulator, catalog=replace(catalog, version="2027-01-01.1", packs={**catalog.packs, year.id: year})
    )
    paid_at = await database_now(engine) + after.clock.offset
    await emulator.pay(sold.session_id)

    async def pack_grant() -> pb.Grant | None:
        try:
            answer = await after.stub.GetBalance(pb.GetBalanceRequest(account_id=account))
        except grpc.aio.AioRpcError:
            return None
        return next((g for g in answer.grants if g.grant_id), None)

    grant = await eventually(pack_grant, lambda g: g is not None and g.remaining == 100_000)
    assert grant is not None and grant.source == pb.GRANT_SOURCE_PURCHASE
    lifetime = grant.expires_at.ToDatetime(UTC) - paid_at
    assert timedelta(days=30) <= lifetime < timedelta(days=30, minutes=5), lifetime
