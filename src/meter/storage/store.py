"""The Postgres store: the queries one use-case transaction needs, on one account.

An instance lives for one transaction (one connection inside `BEGIN ... COMMIT`). Locks are
always taken in the same order, which is what keeps concurrent transactions free of deadlocks:
hold row -> account row -> bucket rows by (pool, bucket). A single-bucket hold (the fast path)
takes exactly one bucket lock and nothing after it.

The queries are grouped by table in the mixins this class combines.
"""

from __future__ import annotations

from meter.domain.balance import Balance
from meter.storage.account_queries import AccountQueries
from meter.storage.balance_event_queries import BalanceEventQueries
from meter.storage.balance_rows import balance_from_row
from meter.storage.bucket_queries import BucketQueries
from meter.storage.budget_queries import BudgetQueries
from meter.storage.caller_rate_queries import CallerRateQueries
from meter.storage.checkout_queries import CheckoutQueries
from meter.storage.credit_queries import CreditQueries
from meter.storage.delivery_queries import DeliveryQueries
from meter.storage.event_queries import EventQueries
from meter.storage.grant_queries import GrantQueries
from meter.storage.hold_queries import HoldQueries
from meter.storage.ledger_queries import LedgerQueries
from meter.storage.payment_queries import PaymentQueries
from meter.storage.refused_queries import RefusedQueries
from meter.storage.usage_queries import UsageQueries
from meter.storage.waiting_queries import WaitingQueries


class PostgresStore(
    AccountQueries,
    BucketQueries,
    HoldQueries,
    CreditQueries,
    CheckoutQueries,
    RefusedQueries,
    PaymentQueries,
    WaitingQueries,
    EventQueries,
    LedgerQueries,
    UsageQueries,
    CallerRateQueries,
    BalanceEventQueries,
    DeliveryQueries,
    BudgetQueries,
    GrantQueries,
):
    async def balance(self, account_id: str) -> Balance:
        """One statement (meter_balance), so one consistent snapshot of the account and its rows."""
        row = await self._row(
            "SELECT b.* FROM accounts AS a, meter_balance(a) AS b WHERE a.account_id = :account_id",
            account_id=account_id,
        )
        assert row is not None, "balance() is called on an existing account"
        return balance_from_row(account_id, row)
