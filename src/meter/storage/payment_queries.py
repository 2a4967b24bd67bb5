"""Queries on payments as refunds and disputes see them: pack purchases and subscription invoices.

Each statement is written out for each of the two tables (purchases by payment_ref,
subscription_payments by invoice_ref) rather than assembled from a table name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from typing import Any

from meter.domain.payments import Payment, PaymentKey, PaymentKind, SubscriptionPayment
from meter.domain.reversals import DisputeStatus, PaymentState
from meter.storage.queries import Queries

_LOCK = {
    PaymentKind.PACK: (
        "SELECT tokens, amount_minor, refunded_minor, refund_reversed_tokens, frozen_tokens, dispute_status, "
        "NULL AS period_start, 0 AS frozen_debt, 0 AS cover_claimed FROM purchases "
        "WHERE account_id = :account_id AND payment_ref = :ref FOR NO KEY UPDATE"
    ),
    PaymentKind.INVOICE: (
        "SELECT tokens, amount_minor, refunded_minor, refund_reversed_tokens, frozen_tokens, dispute_status, "
        "period_start, frozen_debt, cover_claimed FROM subscription_payments "
        "WHERE account_id = :account_id AND invoice_ref = :ref FOR NO KEY UPDATE"
    ),
}
_SAVE = {
    PaymentKind.PACK: (
        "UPDATE purchases SET refunded_minor = :refunded, refund_reversed_tokens = :reversed, "
        "frozen_tokens = :frozen, dispute_status = :dispute WHERE account_id = :account_id AND payment_ref = :ref"
    ),
    PaymentKind.INVOICE: (
        "UPDATE subscription_payments SET refunded_minor = :refunded, refund_reversed_tokens = :reversed, "
        "frozen_tokens = :frozen, dispute_status = :dispute, frozen_debt = :frozen_debt, "
        "cover_claimed = :cover_claimed WHERE account_id = :account_id AND invoice_ref = :ref"
    ),
}


class PaymentQueries(Queries):
    async def payment_by_intent(self, payment_intent: str) -> PaymentKey | None:
        """A read across accounts: a refund or dispute knows only the PaymentIntent."""
        row = await self._row(
            "SELECT 'pack' AS kind, account_id, payment_ref AS ref FROM purchases WHERE payment_intent = :intent "
            "UNION ALL SELECT 'invoice', account_id, invoice_ref FROM subscription_payments "
            "WHERE payment_intent = :intent LIMIT 1",
            intent=payment_intent,
        )
        return _key(row) if row else None

    async def payment_by_invoice(self, invoice_ref: str) -> PaymentKey | None:
        """A read across accounts: an invoice payment names only the invoice."""
        row = await self._row(
            "SELECT 'invoice' AS kind, account_id, invoice_ref AS ref FROM subscription_payments "
            "WHERE invoice_ref = :ref LIMIT 1",
            ref=invoice_ref,
        )
        return _key(row) if row else None

    async def lock_payment(self, key: PaymentKey) -> Payment | None:
        row = await self._row(_LOCK[key.kind], account_id=key.account_id, ref=key.ref)
        return _payment(key, row) if row else None

    async def save_payment(self, payment: Payment) -> None:
        state = payment.state
        await self._execute(
            _SAVE[payment.key.kind],
            account_id=payment.key.account_id,
            ref=payment.key.ref,
            refunded=state.refunded_minor,
            reversed=state.refund_reversed_tokens,
            frozen=state.frozen_tokens,
            dispute=state.dispute.value if state.dispute else None,
            frozen_debt=payment.frozen_debt,
            cover_claimed=payment.cover_claimed,
        )

    async def insert_subscription_payment(self, paid: SubscriptionPayment, now: datetime) -> bool:
        return bool(
            await self._execute(
                "INSERT INTO subscription_payments (account_id, invoice_ref, subscription_ref, period_start, "
                "period_end, proration, amount_minor, currency, tokens, payment_intent, created_at) VALUES "
                "(:account_id, :invoice_ref, :subscription_ref, :period_start, :period_end, :proration, "
                ":amount_minor, :currency, :tokens, :payment_intent, :now) "
                "ON CONFLICT (account_id, invoice_ref) DO NOTHING",
                **asdict(paid),
                now=now,
            )
        )

    async def link_payment_intent(self, account_id: str, invoice_ref: str, payment_intent: str) -> str | None:
        """Record the PaymentIntent that paid an invoice; the one it has (first link wins)."""
        row = await self._row(
            "UPDATE subscription_payments SET payment_intent = coalesce(payment_intent, :intent) "
            "WHERE account_id = :account_id AND invoice_ref = :ref RETURNING payment_intent",
            account_id=account_id,
            ref=invoice_ref,
            intent=payment_intent,
        )
        return row["payment_intent"] if row else None

    async def period_cover(self, account_id: str, period_start: datetime) -> int:
        """The allowance a period left unused when it ended, less what reversals already claimed."""
        row = await self._row(
            "SELECT coalesce(max(unused_at_end), 0) - coalesce(sum(cover_claimed), 0) AS cover "
            "FROM subscription_payments WHERE account_id = :account_id AND period_start = :start",
            account_id=account_id,
            start=period_start,
        )
        return max(0, int(row["cover"])) if row else 0

    async def end_subscription_payments(self, account_id: str, new_period_start: datetime, unused: int) -> None:
        """At a boundary: the payments of the period just left learn what it left unused."""
        await self._execute(
            "UPDATE subscription_payments SET unused_at_end = :unused WHERE account_id = :account_id "
            "AND unused_at_end IS NULL AND period_start < :start",
            account_id=account_id,
            start=new_period_start,
            unused=unused,
        )


def _key(row: Mapping[str, Any]) -> PaymentKey:
    return PaymentKey(PaymentKind(row["kind"]), row["account_id"], row["ref"])


def _payment(key: PaymentKey, row: Mapping[str, Any]) -> Payment:
    dispute = row["dispute_status"]
    state = PaymentState(
        tokens=row["tokens"],
        amount_minor=row["amount_minor"],
        refunded_minor=row["refunded_minor"],
        refund_reversed_tokens=row["refund_reversed_tokens"],
        frozen_tokens=row["frozen_tokens"],
        dispute=DisputeStatus(dispute) if dispute else None,
    )
    return Payment(key, state, row["period_start"], row["frozen_debt"], row["cover_claimed"])
