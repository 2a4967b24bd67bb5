"""A Stripe payment is decided once, whatever account its events name: credited to one account,
or refused; a refused payment credited later is no longer listed for a refund, and the product is
told. (A session meter sold is credited to the account it was sold to: test_checkout.py.)"""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_events import deliver, paid_checkout

from meter.storage.audit import audit
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance_events, new_id, run_cli


def payment() -> tuple[str, str]:
    """A new Checkout Session and its PaymentIntent."""
    return f"cs_test_{uuid.uuid4().hex}", f"pi_test_{uuid.uuid4().hex[:24]}"


async def credited_per_account(engine: AsyncEngine, payment_ref: str) -> list[tuple[str, int]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT account_id, sum(amount) FROM ledger_entries WHERE kind = 'purchase' AND ref = :ref "
                "GROUP BY 1 ORDER BY 1"
            ),
            {"ref": payment_ref},
        )
        return [(row[0], int(row[1])) for row in rows]


async def test_one_payment_named_for_two_accounts_is_credited_to_the_first_only(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    """A session the product made itself (meter did not sell it): its first acceptable event
    decides the account; the other account's event is rejected and listed nowhere (the payment
    bought its tokens: nothing to refund)."""
    first, second = new_id(), new_id()
    session, intent = payment()
    completed = paid_checkout(first, session=session, intent=intent)
    succeeded = paid_checkout(
        second, session=session, intent=intent, event_type="checkout.session.async_payment_succeeded"
    )
    assert (await deliver(meter.webhook_url, completed))[1]["status"] == "applied"
    answer = (await deliver(meter.webhook_url, succeeded))[1]
    assert (answer["status"], answer["reason"].split(":")[0]) == ("rejected", "IDEMPOTENCY_KEY_REUSED")
    assert await credited_per_account(engine, session) == [(first, 1000)]
    listed = await meter.stub.ListRefusedPurchases(pb.ListRefusedPurchasesRequest(page_size=1000))
    assert session not in {p.payment_ref for p in listed.purchases}


async def test_concurrent_events_naming_different_accounts_credit_one_payment_once(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    accounts = [new_id() for _ in range(6)]
    session, intent = payment()
    answers = await asyncio.gather(
        *(deliver(meter.webhook_url, paid_checkout(a, session=session, intent=intent)) for a in accounts)
    )
    assert sorted(body["status"] for _, body in answers) == ["applied"] + ["rejected"] * 5
    credited = await credited_per_account(engine, session)
    assert len(credited) == 1 and credited[0][1] == 1000


async def test_a_refused_payment_credited_later_is_resolved_and_no_longer_listed(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    """Refused (the amount differs from the pack's price), then a later event of the same payment
    with the right amount credits it: the refusal is resolved and told, and support's list (the
    RPC and the CLI) no longer shows a payment to refund."""
    account = new_id()
    session, intent = payment()
    wrong = paid_checkout(account, session=session, intent=intent, amount=90)
    assert (await deliver(meter.webhook_url, wrong))[1]["status"] == "rejected"
    listed = await meter.stub.ListRefusedPurchases(pb.ListRefusedPurchasesRequest(account_id=account))
    assert [(p.payment_ref, p.reason) for p in listed.purchases] == [(session, "PURCHASE_MISMATCH")]

    right = paid_checkout(
        account, session=session, intent=intent, event_type="checkout.session.async_payment_succeeded"
    )
    assert (await deliver(meter.webhook_url, right))[1]["status"] == "applied"
    assert await credited_per_account(engine, session) == [(account, 1000)]
    assert not (await meter.stub.ListRefusedPurchases(pb.ListRefusedPurchasesRequest(account_id=account))).purchases
    code, out, err = await run_cli("purchases", "refused", "--account", account, "--target", meter.address)
    assert (code, out.strip()) == (0, f"no refused purchases for {account}"), err
    told = [(e["type"], e["payload"]) for e in await balance_events(engine, account)]
    assert [t for t, _ in told] == ["purchase.refused", "purchase.credited", "purchase.refusal_resolved"]
    resolved = told[-1][1]
    assert (resolved["payment_ref"], resolved["credited_account_id"], resolved["tokens"]) == (session, account, 1000)

    # Refused again afterwards (a late redelivery of a wrong event): the payment stays credited, unlisted.
    assert (await deliver(meter.webhook_url, paid_checkout(account, session=session, intent=intent, amount=90)))[1][
        "status"
    ] == "rejected"
    assert not (await meter.stub.ListRefusedPurchases(pb.ListRefusedPurchasesRequest(account_id=account))).purchases
    assert len(await balance_events(engine, account)) == 3


async def test_audit_finds_a_payment_credited_twice(meter: RunningMeter, engine: AsyncEngine) -> None:
    first, second = new_id(), new_id()
    session, intent = payment()
    assert (await deliver(meter.webhook_url, paid_checkout(first, session=session, intent=intent)))[1][
        "status"
    ] == "applied"
    assert (await deliver(meter.webhook_url, paid_checkout(second)))[1]["status"] == "applied"  # opens the account
    # What the defect did: the same payment recorded as a purchase of a second account.
    twice = text(
        "INSERT INTO purchases (account_id, payment_ref, pack_id, tokens, amount_minor, currency, payment_intent, "
        "created_at) SELECT :second, payment_ref, pack_id, tokens, amount_minor, currency, payment_intent, created_at "
        "FROM purchases WHERE payment_ref = :ref"
    )
    async with engine.begin() as connection:
        await connection.execute(twice, {"second": second, "ref": session})
    try:
        found = {str(d) for d in (await audit(engine)).discrepancies}
        both = sorted([first, second])
        assert f"{both[0]} payment {session} is credited 2 times, to {both[0]}, {both[1]}" in found
        assert any(f"PaymentIntent {intent} is credited 2 times" in d for d in found)
        assert f"{second} payment {session} is credited to it but decided credited on {first}" in found
        assert not (await audit(engine, second)).clean  # also when auditing that account alone
    finally:
        async with engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM purchases WHERE account_id = :second AND payment_ref = :ref"),
                {"second": second, "ref": session},
            )
    assert (await audit(engine)).clean
