"""Queries on purchases and adjustments: the idempotency records of credits (what refunds and
disputes do to a purchase is in payment_queries)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from meter.domain.callers import acting_caller
from meter.domain.credits import Adjustment, PaymentDecision, PaymentOutcome, Purchase, RefusedPurchase
from meter.domain.pools import PoolName
from meter.storage.queries import Queries


class CreditQueries(Queries):
    async def credit_pack_grant(self, purchase: Purchase, expires_at: datetime, now: datetime) -> int:
        """A pack that expires, credited as a grant of its own (meter_credit_pack_grant): its id."""
        row = await self._row(
            "SELECT meter_credit_pack_grant(:account_id, :payment_ref, :pack_id, :tokens, :expires_at, :now, "
            ":caller) AS grant_id",
            account_id=purchase.account_id,
            payment_ref=purchase.payment_ref,
            pack_id=purchase.pack_id,
            tokens=purchase.tokens,
            expires_at=expires_at,
            now=now,
            caller=acting_caller(),
        )
        assert row is not None
        return int(row["grant_id"])

    async def lock_payment_decision(self, payment_ref: str) -> PaymentDecision | None:
        """The first lock a credit or a refusal of a payment takes (before any account's rows), so
        that two events of one payment, whatever accounts they name, are decided one after the
        other. A payment not decided yet has no row to lock: its first decision is an insert that
        a concurrent one conflicts with (the unit of work then runs again and finds it)."""
        row = await self._row(
            "SELECT payment_ref, account_id, outcome FROM pack_payments WHERE payment_ref = :payment_ref FOR UPDATE",
            payment_ref=payment_ref,
        )
        return PaymentDecision(row["payment_ref"], row["account_id"], PaymentOutcome(row["outcome"])) if row else None

    async def decide_payment(self, decision: PaymentDecision, now: datetime, *, undecided: bool) -> bool:
        """Record a payment's outcome: a first decision (undecided: False when another transaction
        decided it meanwhile), or a refused payment credited after all."""
        if undecided:
            statement = (
                "INSERT INTO pack_payments (payment_ref, account_id, outcome, decided_at) "
                "VALUES (:payment_ref, :account_id, :outcome, :now) ON CONFLICT (payment_ref) DO NOTHING"
            )
        else:
            statement = (
                "UPDATE pack_payments SET account_id = :account_id, outcome = :outcome, decided_at = :now "
                "WHERE payment_ref = :payment_ref AND outcome = 'refused'"
            )
        return bool(
            await self._execute(
                statement,
                payment_ref=decision.payment_ref,
                account_id=decision.account_id,
                outcome=decision.outcome.value,
                now=now,
            )
        )

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
