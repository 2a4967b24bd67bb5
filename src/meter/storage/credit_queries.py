"""Queries on purchases and adjustments: the idempotency records of credits (what refunds and
disputes do to a purchase is in payment_queries)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from meter.domain.credits import Adjustment, Purchase, RefusedPurchase
from meter.domain.pools import PoolName
from meter.storage.queries import Queries


class CreditQueries(Queries):
    async def purchase(self, account_id: str, payment_ref: str) -> Purchase | None:
        row = await self._row(
            "SELECT account_id, payment_ref, pack_id, tokens, amount_minor, currency, payment_intent, event_id "
            "FROM purchases WHERE account_id = :account_id AND payment_ref = :payment_ref",
            account_id=account_id,
            payment_ref=payment_ref,
        )
        return Purchase(**row) if row else None

    async def insert_purchase(self, purchase: Purchase, now: datetime) -> bool:
        return bool(
            await self._execute(
                "INSERT INTO purchases (account_id, payment_ref, pack_id, tokens, amount_minor, currency, "
                "payment_intent, event_id, created_at) VALUES (:account_id, :payment_ref, :pack_id, :tokens, "
                ":amount_minor, :currency, :payment_intent, :event_id, :now) "
                "ON CONFLICT (account_id, payment_ref) DO NOTHING",
                **asdict(purchase),
                now=now,
            )
        )

    async def insert_refused_purchase(self, refused: RefusedPurchase, now: datetime) -> bool:
        return bool(
            await self._execute(
                "INSERT INTO refused_purchases (account_id, payment_ref, pack_id, tokens, amount_minor, currency, "
                "payment_intent, event_id, reason, message, refused_at) VALUES (:account_id, :payment_ref, "
                ":pack_id, :tokens, :amount_minor, :currency, :payment_intent, :event_id, :reason, :message, :now) "
                "ON CONFLICT (account_id, payment_ref) DO NOTHING",
                **asdict(refused.purchase),
                reason=refused.reason,
                message=refused.message,
                now=now,
            )
        )

    async def adjustment(self, account_id: str, request_id: str) -> Adjustment | None:
        row = await self._row(
            "SELECT account_id, request_id, pool, delta, reason FROM adjustments "
            "WHERE account_id = :account_id AND request_id = :request_id",
            account_id=account_id,
            request_id=request_id,
        )
        return Adjustment(**{**row, "pool": PoolName(row["pool"])}) if row else None

    async def insert_adjustment(self, adjustment: Adjustment, now: datetime) -> bool:
        return bool(
            await self._execute(
                "INSERT INTO adjustments (account_id, request_id, pool, delta, reason, created_at) "
                "VALUES (:account_id, :request_id, :pool, :delta, :reason, :now) "
                "ON CONFLICT (account_id, request_id) DO NOTHING",
                **{**asdict(adjustment), "pool": adjustment.pool.value},
                now=now,
            )
        )
