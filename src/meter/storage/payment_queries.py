"""Queries on payments as refunds and disputes see them: pack purchases and subscription invoices.

Each statement is written out for each of the two tables (purchases by payment_ref,
subscription_payments by invoice_ref) rather than assembled from a table name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from typing import Any

from meter.domain.callers import acting_caller
from meter.domain.ledger import EntryKind
from meter.domain.payments import Payment, PaymentKey, PaymentKind, SubscriptionPayment, TakenBack
from meter.domain.reversals import DisputeStatus, PaymentState
from meter.storage.queries import Queries

_LOCK = {
    PaymentKind.PACK: (
        "SELECT tokens, amount_minor, refunded_minor, refund_reversed_tokens, frozen_tokens, dispute_status "
        "FROM purchases WHERE account_id = :account_id AND payment_ref = :ref FOR NO KEY UPDATE"
    ),
    PaymentKind.INVOICE: (
        "SELECT tokens, amount_minor, refunded_minor, refund_reversed_tokens, frozen_tokens, dispute_status "
        "FROM subscription_payments WHERE account_id = :account_id AND invoice_ref = :ref FOR NO KEY UPDATE"
    ),
}
_SAVE = {
    PaymentKind.PACK: (
        "UPDATE purchases SET refunded_minor = :refunded, refund_reversed_tokens = :reversed, "
        "frozen_tokens = :frozen, dispute_status = :dispute, frozen_debt = least(frozen_debt, :frozen), "
        "frozen_cover = least(frozen_cover, :frozen) WHERE account_id = :account_id AND payment_ref = :ref"
    ),
    PaymentKind.INVOICE: (
        "UPDATE subscription_payments SET refunded_minor = :refunded, refund_reversed_tokens = :reversed, "
        "frozen_tokens = :frozen, dispute_status = :dispute, frozen_debt = least(frozen_debt, :frozen), "
        "frozen_withheld = least(frozen_withheld, :frozen), frozen_cover = least(frozen_cover, :frozen), "
        "frozen_granted = least(frozen_granted, :frozen) "
        "WHERE account_id = :account_id AND invoice_ref = :ref"
    ),
}


class PaymentQueries(Queries):
    async def take_back(
        self, account_id: str, key: PaymentKey, tokens: int, kind: EntryKind, ref: str, now: datetime
    ) -> TakenBack:
        row = await self._row(
            "SELECT * FROM meter_take_back(:account_id, :payment_kind, :payment_ref, :tokens, :kind, :ref, :now, "
            ":caller)",
            account_id=account_id,
            payment_kind=key.kind.value,
            payment_ref=key.ref,
            tokens=tokens,
            kind=kind.value,
            ref=ref,
            now=now,
            caller=acting_caller(),
        )
        assert row is not None
        return TakenBack(int(row["withheld"]), int(row["from_pool"]), int(row["from_cover"]), int(row["to_debt"]))

    async def give_back(self, account_id: str, key: PaymentKey, tokens: int, ref: str, now: datetime) -> int:
        row = await self._row(
            "SELECT meter_give_back(:account_id, :payment_kind, :payment_ref, :tokens, :ref, :now, :caller) AS given",
            account_id=account_id,
            payment_kind=key.kind.value,
            payment_ref=key.ref,
            tokens=tokens,
            ref=ref,
            now=now,
            caller=acting_caller(),
        )
        assert row is not None
        return int(row["given"])

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
        )

    async def insert_subscription_payment(self, paid: SubscriptionPayment, now: datetime) -> bool:
        return bool(
            await self._execute(
                "INSERT INTO subscription_payments (account_id, invoice_ref, subscription_ref, period_start, "
                "period_end, proration, amount_minor, currency, tokens, payment_intent, months, month_anchor, "
                "unused_at_end, created_at) "
                "VALUES (:account_id, :invoice_ref, :subscription_ref, :period_start, :period_end, :proration, "
                ":amount_minor, :currency, :tokens, :payment_intent, :months, :month_anchor, :unused_at_end, :now) "
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
    return Payment(key, state)
