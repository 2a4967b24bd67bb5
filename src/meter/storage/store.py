"""The Postgres store: the queries one use-case transaction needs, on one account.

An instance lives for one transaction (one connection inside `BEGIN ... COMMIT`). Locks are
always taken in the same order, which is what keeps concurrent transactions free of deadlocks:
hold row -> account row -> bucket rows by (pool, bucket). A single-bucket hold (the fast path)
takes exactly one bucket lock and nothing after it.

The queries are grouped by table in the mixins this class combines.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from meter.domain.balance import Balance
from meter.domain.callers import acting_caller
from meter.domain.ledger import LedgerEntry
from meter.storage.account_queries import ACCOUNT_COLUMNS, AccountQueries
from meter.storage.bucket_queries import BucketQueries
from meter.storage.caller_rate_queries import CallerRateQueries
from meter.storage.credit_queries import CreditQueries
from meter.storage.event_queries import EventQueries
from meter.storage.hold_queries import HoldQueries, balance_from_row
from meter.storage.ledger_queries import LedgerQueries
from meter.storage.payment_queries import PaymentQueries
from meter.storage.usage_queries import ANNOUNCED_LEVELS, UsageQueries
from meter.storage.waiting_queries import WaitingQueries


class PostgresStore(
    AccountQueries,
    BucketQueries,
    HoldQueries,
    CreditQueries,
    PaymentQueries,
    WaitingQueries,
    EventQueries,
    LedgerQueries,
    UsageQueries,
    CallerRateQueries,
):
    async def append(self, account_id: str, entries: Sequence[LedgerEntry], now: datetime) -> None:
        entries = [e for e in entries if e.amount]
        if not entries:
            return
        await self._execute(
            "INSERT INTO ledger_entries "
            "(account_id, created_at, caller, kind, pool, amount, reservation_id, ref, note) "
            "SELECT :account_id, :now, :caller, * FROM unnest(CAST(:kinds AS text[]), CAST(:pools AS text[]), "
            "CAST(:amounts AS bigint[]), CAST(:reservations AS text[]), CAST(:refs AS text[]), "
            "CAST(:notes AS text[]))",
            account_id=account_id,
            now=now,
            caller=acting_caller(),
            kinds=[e.kind.value for e in entries],
            pools=[e.pool.value for e in entries],
            amounts=[e.amount for e in entries],
            reservations=[e.reservation_id for e in entries],
            refs=[e.ref for e in entries],
            notes=[e.note for e in entries],
        )

    async def balance(self, account_id: str) -> Balance:
        """One statement, so one consistent snapshot of the account and all its buckets."""
        row = await self._row(
            f"SELECT {ACCOUNT_COLUMNS}, s.*, {ANNOUNCED_LEVELS} AS warned FROM accounts AS a, LATERAL (SELECT "
            "coalesce(sum(available) FILTER (WHERE pool = 'allowance'), 0) AS allowance_remaining, "
            "coalesce(sum(available) FILTER (WHERE pool = 'purchased'), 0) AS purchased_remaining, "
            "coalesce(sum(held) FILTER (WHERE pool = 'allowance'), 0) AS allowance_held, "
            "coalesce(sum(held) FILTER (WHERE pool = 'purchased'), 0) AS purchased_held, "
            "coalesce(sum(used), 0) AS used FROM buckets AS b WHERE b.account_id = a.account_id) AS s "
            "WHERE a.account_id = :account_id",
            account_id=account_id,
        )
        assert row is not None, "balance() is called on an existing account"
        return balance_from_row(account_id, row)
