"""Which action each Stripe event maps to, on the shared fixtures (pure, no server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from stripe_events import FIXTURES, paid_checkout, raw_fixture, signature

from meter.webhooks.mapping import Credit, Grant, Ignore, Plan, Reject, Reverse, action_for
from meter.webhooks.verify import NotAnEvent, verified_event


def fixture(name: str) -> dict[str, Any]:
    return json.loads(raw_fixture(name))


def obj(event: dict[str, Any]) -> dict[str, Any]:
    return event["data"]["object"]


class TestCheckout:
    def test_the_shipped_fixture_is_unpaid_and_not_a_token_pack(self) -> None:
        assert isinstance(action_for(fixture("checkout.session.completed")), Ignore)

    def test_paid_token_pack_is_a_credit_with_the_session_as_payment_ref(self) -> None:
        action = action_for(json.loads(paid_checkout("acme", intent="pi_1")))
        assert action == Credit(
            "acme", "pack_1000_tokens", 1000, 100, "usd", obj(fixture("checkout.session.completed"))["id"], "pi_1"
        )

    def test_unpaid_token_pack_waits(self) -> None:
        action = action_for(json.loads(paid_checkout("acme", payment_status="unpaid")))
        assert isinstance(action, Ignore) and action.account_id == "acme"

    @pytest.mark.parametrize(
        "metadata", [{"account_id": "", "pack_id": "p"}, {"account_id": "a", "pack_id": "p", "tokens": "1e3"}]
    )
    def test_malformed_metadata_is_rejected(self, metadata: dict[str, str]) -> None:
        event = json.loads(paid_checkout("acme"))
        obj(event)["metadata"] = {"type": "token_pack_purchase", "tokens": "1000", **metadata}
        assert isinstance(action_for(event), Reject)


class TestChargesAndDisputes:
    def test_refund_uses_the_cumulative_amount(self) -> None:
        event = fixture("charge.refunded")
        obj(event).update(payment_intent="pi_1", amount_refunded=30)
        assert action_for(event) == Reverse("refund", "pi_1", 30, obj(event)["id"])

    def test_the_shipped_refund_links_to_no_purchase(self) -> None:
        assert isinstance(action_for(fixture("charge.refunded")), Ignore)

    def test_a_refunded_invoice_payment_is_not_a_pack(self) -> None:
        event = fixture("charge.refunded")
        obj(event).update(payment_intent="pi_1", amount_refunded=30, invoice="in_1")
        assert isinstance(action_for(event), Ignore)

    @pytest.mark.parametrize(("status", "kind"), [("won", "dispute_won"), ("lost", None)])
    def test_dispute_lifecycle(self, status: str, kind: str | None) -> None:
        created = fixture("charge.dispute.created")
        obj(created)["payment_intent"] = "pi_1"
        assert action_for(created) == Reverse("dispute", "pi_1", 0, obj(created)["id"])
        closed = {**created, "type": "charge.dispute.closed"}
        obj(closed)["status"] = status
        action = action_for(closed)
        assert (action.kind if isinstance(action, Reverse) else None) == kind


class TestSubscriptionsAndInvoices:
    def test_subscription_maps_to_plan_and_item_period(self) -> None:
        event = fixture("customer.subscription.updated")
        obj(event)["metadata"] = {"account_id": "acme", "plan_id": "pro"}
        obj(event)["items"]["data"][0].update(current_period_start=1_790_000_000, current_period_end=1_792_600_000)
        action = action_for(event)
        assert isinstance(action, Plan)
        assert (action.plan_id, action.subscription_ref) == ("pro", obj(event)["id"])
        assert action.period == (datetime.fromtimestamp(1_790_000_000, UTC), datetime.fromtimestamp(1_792_600_000, UTC))
        assert action.event_time == datetime.fromtimestamp(event["created"], UTC)

    def test_a_subscription_without_an_account_is_not_ours(self) -> None:
        assert isinstance(action_for(fixture("customer.subscription.created")), Ignore)

    def test_deleted_subscription_ends_the_allowance_now(self) -> None:
        event = fixture("customer.subscription.deleted")
        obj(event)["metadata"] = {"account_id": "acme", "plan_id": "pro"}
        action = action_for(event)
        assert isinstance(action, Plan) and action.plan_id == "free" and action.expire_allowance_now

    def test_the_shipped_invoice_has_no_subscription(self) -> None:
        assert isinstance(action_for(fixture("invoice.paid")), Ignore)

    def test_subscription_invoice_grants_its_line_period(self) -> None:
        event = fixture("invoice.paid")
        invoice = obj(event)
        invoice["parent"] = {
            "type": "subscription_details",
            "subscription_details": {"subscription": "sub_1", "metadata": {"account_id": "acme"}},
        }
        line = invoice["lines"]["data"][0]
        line["period"] = {"start": 1_790_000_000, "end": 1_792_600_000}
        line["parent"] = {"type": "subscription_item_details", "subscription_item_details": {"subscription": "sub_1"}}
        action = action_for(event)
        assert isinstance(action, Grant)
        assert (action.subscription_ref, action.account_id, action.invoice_ref) == ("sub_1", "acme", invoice["id"])

    def test_other_events_are_ignored(self) -> None:
        assert isinstance(action_for({"type": "customer.created", "data": {"object": {}}}), Ignore)


class TestVerification:
    def test_every_fixture_verifies_when_signed_as_is(self) -> None:
        for path in sorted(FIXTURES.glob("*.json")):
            payload = path.read_bytes()
            assert verified_event(payload, signature(payload), ["whsec_other", "whsec_test_meter"])["id"]

    def test_refusals(self) -> None:
        payload = raw_fixture("invoice.paid")
        with pytest.raises(NotAnEvent):
            verified_event(payload, None, ["whsec_test_meter"])
        with pytest.raises(NotAnEvent):
            verified_event(payload, signature(payload), ["whsec_other"])
        with pytest.raises(NotAnEvent):
            verified_event(b"[]", signature(b"[]"), ["whsec_test_meter"])
        with pytest.raises(NotAnEvent):  # found by test_hostile_input: the stripe library raised UnicodeDecodeError
            verified_event(b"\x80", "t=1,v1=zz", ["whsec_test_meter"])
