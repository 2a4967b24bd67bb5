"""Queries on refused_purchases: payments Stripe took that meter would not credit, as support
lists and settles them. Only payments still refused count (one credited since is not to be
refunded: pack_payments says which)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meter.domain.credits import Purchase, RefusalState, RefusedPurchase, Settlement
from meter.storage.queries import Queries

_SELECT = (
    "SELECT r.account_id, r.payment_ref, r.pack_id, r.tokens, r.amount_minor, r.currency, r.payment_intent, "
    "r.event_id, r.reason, r.message, r.refused_at, r.number, r.state, r.refunded_minor, r.refund_ref, r.note, "
    "r.settled_at, r.settled_by FROM refused_purchases AS r "
    "JOIN pack_payments AS p ON p.payment_ref = r.payment_ref AND p.outcome = 'refused' "
)


def _refused(row: Mapping[str, Any]) -> RefusedPurchase:
    return RefusedPurchase(
        Purchase(
            row["account_id"],
            row["payment_ref"],
            row["pack_id"],
            row["tokens"],
            row["amount_minor"],
            row["currency"],
            row["payment_intent"],
            row["event_id"],
        ),
        row["reason"],
        row["message"],
        row["refused_at"],
        row["number"],
        Settlement(
            RefusalState(row["state"]),
            row["refunded_minor"],
            row["refund_ref"],
            row["note"],
            row["settled_at"],
            row["settled_by"],
        ),
    )


class RefusedQueries(Queries):
    async def refused_purchases(
        self, account_id: str, before: int, limit: int, *, unsettled_only: bool = False
    ) -> Sequence[RefusedPurchase]:
        """Newest first, from the one numbered below `before` (0: the newest)."""
        rows = await self._rows(
            _SELECT + "WHERE (:account_id = '' OR r.account_id = :account_id) AND (:before = 0 OR r.number < :before) "
            "AND (NOT :unsettled_only OR r.state IN ('open', 'refund_requested')) ORDER BY r.number DESC LIMIT :limit",
            account_id=account_id,
            before=before,
            limit=limit,
            unsettled_only=unsettled_only,
        )
        return [_refused(row) for row in rows]

    async def lock_refused_purchase(self, account_id: str, payment_ref: str) -> RefusedPurchase | None:
        """Locked after the payment's decision (lock_payment_decision), as every decision on it is."""
        row = await self._row(
            _SELECT + "WHERE r.account_id = :account_id AND r.payment_ref = :payment_ref FOR UPDATE OF r",
            account_id=account_id,
            payment_ref=payment_ref,
        )
        return _refused(row) if row else None

    async def refused_purchase_by_intent(self, payment_intent: str) -> RefusedPurchase | None:
        """The refused purchase this PaymentIntent paid for (not locked: lock it by its payment_ref)."""
        row = await self._row(
            _SELECT + "WHERE r.payment_intent = :payment_intent ORDER BY r.number LIMIT 1",
            payment_intent=payment_intent,
        )
        return _refused(row) if row else None

    async def settle_refused_purchase(self, account_id: str, payment_ref: str, settlement: Settlement) -> None:
        await self._execute(
            "UPDATE refused_purchases SET state = :state, refunded_minor = :refunded_minor, refund_ref = :refund_ref, "
            "note = :note, settled_at = :settled_at, settled_by = :settled_by "
            "WHERE account_id = :account_id AND payment_ref = :payment_ref",
            account_id=account_id,
            payment_ref=payment_ref,
            state=settlement.state.value,
            refunded_minor=settlement.refunded_minor,
            refund_ref=settlement.refund_ref,
            note=settlement.note,
            settled_at=settlement.settled_at,
            settled_by=settlement.settled_by,
        )
