"""Queries on purchases and adjustments: the idempotency records of credits."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meter.domain.reversals import PurchaseState
from meter.storage.queries import Queries


class CreditQueries(Queries):
    async def purchase(self, account_id: str, payment_ref: str) -> Mapping[str, Any] | None:
        return await self._row(
            "SELECT * FROM purchases WHERE account_id = :account_id AND payment_ref = :payment_ref",
            account_id=account_id,
            payment_ref=payment_ref,
        )

    async def insert_purchase(self, record: Mapping[str, Any], now: datetime) -> bool:
        return bool(
            await self._execute(
                "INSERT INTO purchases (account_id, payment_ref, pack_id, tokens, amount_minor, currency, "
                "payment_intent, event_id, created_at) VALUES (:account_id, :payment_ref, :pack_id, :tokens, "
                ":amount_minor, :currency, :payment_intent, :event_id, :now) "
                "ON CONFLICT (account_id, payment_ref) DO NOTHING",
                **record,
                now=now,
            )
        )

    async def lock_purchase(self, account_id: str, payment_ref: str) -> Mapping[str, Any] | None:
        return await self._row(
            "SELECT * FROM purchases WHERE account_id = :account_id AND payment_ref = :payment_ref FOR NO KEY UPDATE",
            account_id=account_id,
            payment_ref=payment_ref,
        )

    async def save_purchase_reversals(self, account_id: str, payment_ref: str, state: PurchaseState) -> None:
        await self._execute(
            "UPDATE purchases SET refunded_minor = :refunded, refund_reversed_tokens = :reversed, "
            "frozen_tokens = :frozen WHERE account_id = :account_id AND payment_ref = :payment_ref",
            account_id=account_id,
            payment_ref=payment_ref,
            refunded=state.refunded_minor,
            reversed=state.refund_reversed_tokens,
            frozen=state.frozen_tokens,
        )

    async def purchase_by_intent(self, payment_intent: str) -> tuple[str, str] | None:
        """(account_id, payment_ref): a read across accounts (refunds know only the PaymentIntent)."""
        row = await self._row(
            "SELECT account_id, payment_ref FROM purchases WHERE payment_intent = :intent LIMIT 1",
            intent=payment_intent,
        )
        return (row["account_id"], row["payment_ref"]) if row else None

    async def adjustment(self, account_id: str, request_id: str) -> Mapping[str, Any] | None:
        return await self._row(
            "SELECT * FROM adjustments WHERE account_id = :account_id AND request_id = :request_id",
            account_id=account_id,
            request_id=request_id,
        )

    async def insert_adjustment(self, record: Mapping[str, Any], now: datetime) -> bool:
        return bool(
            await self._execute(
                "INSERT INTO adjustments (account_id, request_id, pool, delta, reason, created_at) "
                "VALUES (:account_id, :request_id, :pool, :delta, :reason, :now) "
                "ON CONFLICT (account_id, request_id) DO NOTHING",
                **record,
                now=now,
            )
        )
