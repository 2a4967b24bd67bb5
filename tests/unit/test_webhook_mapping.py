"""Which action each Stripe event maps to, on the fixtures (pure, no server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from stripe_events import FIXTURES, paid_checkout, raw_fixture, signature

from meter.domain.invoices import InvoiceLine
from meter.domain.periods import Period
from meter.webhooks.actions import Credit, Ignore, InvoicePaid, PaymentFailed, PaymentLink, Plan, Reject, Reverse
from meter.webhooks.mapping import action_for
from meter.webhooks.verify import NotAnEvent, verified_event


def fixture(name: str) -> dict[str, Any]:
    return json.loads(raw_fixture(name))


def obj(event: dict[str, Any]) -> dict[str, Any]:
    return event["data"]["object"]


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class TestCheckout:
    def test_the_shipped_fixture_is_unpaid_and_not_a_token_pack(self) -> None:
        assert isinstance(action_for(fixture("checkout.session.completed")), Ignore)

    def test_paid_token_pack_is_a_credit_with_the_session_as_payment_ref(self) -> None:
        action = action_for(json.loads(paid_checkout("acme", session="cs_1", intent="pi_1")))
        assert action == Credit("acme", "pack_1000_tokens", 1000, 100, "usd", "cs_1", "pi_1")

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

    def test_a_refunded_invoice_payment_is_reversed_too(self) -> None:
        """API versions before 2025-03-31 name the invoice on the charge; later ones do not, and
        the service finds the invoice by its PaymentIntent."""
        event = fixture("charge.refunded")
        obj(event).update(payment_intent="pi_1", amount_refunded=30, invoice="in_1")
        assert action_for(event) == Reverse("refund", "pi_1", 30, obj(event)["id"], "in_1")

    @pytest.mark.parametrize(
        ("kind", "status", "reversal"),
        [
            ("charge.dispute.created", "needs_response", "dispute"),
            ("charge.dispute.created", "warning_needs_response", "dispute"),
            ("charge.dispute.updated", "under_review", "dispute"),
            ("charge.dispute.closed", "won", "dispute_won"),
            ("charge.dispute.closed", "warning_closed", "dispute_won"),
            ("charge.dispute.closed", "lost", "dispute_lost"),
            ("charge.dispute.created", "won", "dispute_won"),  # the status counts, not the event type
        ],
    )
    def test_a_dispute_event_maps_by_the_status_it_carries(self, kind: str, status: str, reversal: str) -> None:
        event = {**fixture("charge.dispute.created"), "type": kind}
        obj(event).update(payment_intent="pi_1", status=status)
        assert action_for(event) == Reverse(reversal, "pi_1", 0, obj(event)["id"])

    def test_an_unknown_dispute_status_is_rejected(self) -> None:
        event = fixture("charge.dispute.created")
        obj(event).update(payment_intent="pi_1", status="sideways")
        assert isinstance(action_for(event), Reject)


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
        assert action.subscription_status == obj(event)["status"]

    def test_a_subscription_without_an_account_is_not_ours(self) -> None:
        assert isinstance(action_for(fixture("customer.subscription.created")), Ignore)

    def test_deleted_subscription_returns_to_the_default_plan(self) -> None:
        event = fixture("customer.subscription.deleted")
        obj(event)["metadata"] = {"account_id": "acme", "plan_id": "pro"}
        action = action_for(event)
        assert isinstance(action, Plan) and action.plan_id == "" and action.subscription_cancelled

    def test_the_shipped_invoice_has_no_subscription(self) -> None:
        assert isinstance(action_for(fixture("invoice.paid")), Ignore)

    @staticmethod
    def invoice(*lines: dict[str, Any], metadata: dict[str, str] | None = None) -> dict[str, Any]:
        event = fixture("invoice.paid")
        invoice = obj(event)
        invoice.update(amount_paid=2000, currency="usd")
        invoice["parent"] = {
            "type": "subscription_details",
            "subscription_details": {"subscription": "sub_1", "metadata": metadata},
        }
        template = invoice["lines"]["data"][0]
        invoice["lines"]["data"] = [json.loads(json.dumps(template)) | line for line in lines]
        return event

    @staticmethod
    def line(start: int, end: int, *, proration: bool, price: str, amount: int) -> dict[str, Any]:
        kind = "invoice_item_details" if proration else "subscription_item_details"
        return {
            "period": {"start": start, "end": end},
            "amount": amount,
            "pricing": {"type": "price_details", "price_details": {"price": price}},
            "parent": {"type": kind, kind: {"subscription": "sub_1", "proration": proration}},
        }

    def test_a_subscription_invoice_lists_its_lines(self) -> None:
        event = self.invoice(
            self.line(1_790_000_000, 1_792_600_000, proration=True, price="price_starter_monthly", amount=-500),
            self.line(1_792_600_000, 1_795_200_000, proration=False, price="price_pro_monthly", amount=2000),
            metadata={"account_id": "acme"},
        )
        action = action_for(event)
        assert isinstance(action, InvoicePaid)
        assert (action.subscription_ref, action.account_id, action.invoice_ref) == ("sub_1", "acme", obj(event)["id"])
        assert (action.amount_minor, action.currency) == (2000, "usd")
        assert action.lines == (
            InvoiceLine(Period(at(1_790_000_000), at(1_792_600_000)), True, "price_starter_monthly", -500),
            InvoiceLine(Period(at(1_792_600_000), at(1_795_200_000)), False, "price_pro_monthly", 2000),
        )

    def test_an_invoice_of_a_subscription_meter_did_not_sell_is_ignored(self) -> None:
        line = self.line(1_790_000_000, 1_792_600_000, proration=False, price="price_x", amount=1)
        assert isinstance(action_for(self.invoice(line, metadata={"other_product": "x"})), Ignore)

    @pytest.mark.parametrize("next_attempt", [1_792_900_000, None], ids=["retrying", "retries over"])
    def test_a_failed_invoice_payment_is_told(self, next_attempt: int | None) -> None:
        line = self.line(1_792_600_000, 1_795_200_000, proration=False, price="price_pro_monthly", amount=2000)
        event = self.invoice(line, metadata={"account_id": "acme"})
        event["type"] = "invoice.payment_failed"
        obj(event).update(
            status="open", amount_due=2000, attempt_count=2, next_payment_attempt=next_attempt,
            billing_reason="subscription_cycle",
        )  # fmt: skip
        action = action_for(event)
        assert action == PaymentFailed(
            subscription_ref="sub_1",
            invoice_ref=obj(event)["id"],
            account_id="acme",
            amount_minor=2000,
            currency="usd",
            attempt_count=2,
            next_attempt=at(next_attempt) if next_attempt else None,
            billing_reason="subscription_cycle",
        )

    def test_a_failed_invoice_in_an_older_api_version_names_its_subscription_itself(self) -> None:
        """Before 2025-03-31 an invoice names its subscription at the top and has no parent: the
        account is then the subscription's (found by its ref)."""
        event = fixture("invoice.paid")
        event["type"] = "invoice.payment_failed"
        obj(event).update(subscription="sub_old", parent=None, amount_due=900, currency="eur", attempt_count=1)
        obj(event)["next_payment_attempt"] = None
        action = action_for(event)
        assert isinstance(action, PaymentFailed)
        assert (action.subscription_ref, action.account_id, action.amount_minor) == ("sub_old", "", 900)

    def test_a_failed_invoice_without_a_subscription_is_not_ours(self) -> None:
        event = fixture("invoice.paid")
        event["type"] = "invoice.payment_failed"
        assert isinstance(action_for(event), Ignore)

    def test_an_invoice_payment_links_the_payment_intent(self) -> None:
        payment = {
            "id": "inpay_1",
            "object": "invoice_payment",
            "invoice": "in_1",
            "status": "paid",
            "payment": {"type": "payment_intent", "payment_intent": "pi_1"},
        }
        event = {"id": "evt_1", "type": "invoice_payment.paid", "data": {"object": payment}}
        assert action_for(event) == PaymentLink("in_1", "pi_1")
        payment["payment"] = {"type": "payment_record", "payment_record": "pr_1"}
        assert isinstance(action_for(event), Ignore)

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
