"""Queries on purchases and adjustments: the idempotency records of credits (what refunds and
disputes do to a purchase is in payment_queries)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

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
