"""The Postgres store: the queries one use-case transaction needs, on one account.

An instance lives for one transaction (one connection inside `BEGIN ... COMMIT`). Locks are
always taken in the same order, which is what keeps concurrent transactions free of deadlocks:
hold row -> account row -> bucket rows by (pool, bucket). A single-bucket hold (the fast path)
takes exactly one bucket lock and nothing after it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from meter.domain import ids
from meter.domain.accounts import Account
from meter.domain.balance import Balance
from meter.domain.holds import Hold, HoldStatus, Pricing, ReserveParams, Usage
from meter.domain.ledger import LedgerEntry
from meter.domain.periods import Period
from meter.domain.pools import BucketRow, PoolName
from meter.storage.clock import DatabaseClock

_NOW = "now() + make_interval(secs => :clock_offset)"

_ACCOUNT_COLUMNS = """a.account_id, a.plan_id, a.monthly_allowance, a.period_start, a.period_end,
    a.calendar_periods, a.allowance_total, a.debt, a.bucket_count, a.subscription_ref,
    a.plan_event_time"""


class PostgresStore:
    def __init__(self, connection: AsyncConnection, clock: DatabaseClock) -> None:
        self._db = connection
        self._clock = clock

    async def _rows(self, sql: str, **params: Any) -> Sequence[Mapping[str, Any]]:
        result = await self._db.execute(text(sql), {"clock_offset": self._clock.offset_seconds, **params})
        return result.mappings().all()

    async def _row(self, sql: str, **params: Any) -> Mapping[str, Any] | None:
        rows = await self._rows(sql, **params)
        return rows[0] if rows else None

    async def _execute(self, sql: str, **params: Any) -> int:
        result = await self._db.execute(text(sql), {"clock_offset": self._clock.offset_seconds, **params})
        return result.rowcount

    # --- accounts ---------------------------------------------------------------------------

    async def account_state(self, account_id: str) -> tuple[Account | None, datetime]:
        """The account (unlocked) and the clock's now, in one round trip."""
        row = await self._row(
            f"SELECT {_ACCOUNT_COLUMNS}, {_NOW} AS now FROM (SELECT 1) AS one "
            "LEFT JOIN accounts AS a ON a.account_id = :account_id",
            account_id=account_id,
        )
        assert row is not None
        return (_account(row) if row["account_id"] is not None else None), row["now"]

    async def lock_account(self, account_id: str) -> Account | None:
        row = await self._row(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts AS a WHERE a.account_id = :account_id FOR UPDATE",
            account_id=account_id,
        )
        return _account(row) if row else None

    async def insert_account(self, account: Account, now: datetime) -> bool:
        """Create the account with its empty buckets; False if it already exists."""
        created = await self._execute(
            "INSERT INTO accounts (account_id, plan_id, monthly_allowance, period_start, period_end, "
            "calendar_periods, allowance_total, debt, bucket_count, subscription_ref, plan_event_time, "
            "created_at, updated_at) VALUES (:account_id, :plan_id, :monthly_allowance, :period_start, "
            ":period_end, :calendar_periods, 0, 0, :bucket_count, :subscription_ref, :plan_event_time, "
            ":now, :now) ON CONFLICT (account_id) DO NOTHING",
            **_account_params(account),
            now=now,
        )
        if not created:
            return False
        await self._execute(
            "INSERT INTO buckets (account_id, pool, bucket, available, held, used) "
            "SELECT :account_id, pool, bucket, 0, 0, 0 FROM unnest(ARRAY['allowance', 'purchased']) AS pool, "
            "generate_series(0, :bucket_count - 1) AS bucket",
            account_id=account.account_id,
            bucket_count=account.bucket_count,
        )
        return True

    async def save_account(self, account: Account, now: datetime) -> None:
        """Write an account's mutable fields; the caller holds its row lock."""
        await self._execute(
            "UPDATE accounts SET plan_id = :plan_id, monthly_allowance = :monthly_allowance, "
            "period_start = :period_start, period_end = :period_end, calendar_periods = :calendar_periods, "
            "allowance_total = :allowance_total, debt = :debt, subscription_ref = :subscription_ref, "
            "plan_event_time = :plan_event_time, updated_at = :now WHERE account_id = :account_id",
            **_account_params(account),
            allowance_total=account.allowance_total,
            debt=account.debt,
            now=now,
        )

    async def claim_period(self, account: Account, following: Period, now: datetime) -> Account | None:
        """Move the account to its next period, once: of concurrent callers crossing the same
        boundary, one updates the row and the others (blocked on its lock) match nothing."""
        row = await self._row(
            "UPDATE accounts AS a SET period_start = :start, period_end = :end, updated_at = :now "
            "WHERE account_id = :account_id AND period_end = :old_end "
            f"RETURNING {_ACCOUNT_COLUMNS}",
            account_id=account.account_id,
            start=following.start,
            end=following.end,
            old_end=account.period.end,
            now=now,
        )
        return _account(row) if row else None

    # --- buckets ----------------------------------------------------------------------------

    async def pool_available(self, account_id: str, pool: PoolName) -> int:
        row = await self._row(
            "SELECT coalesce(sum(available), 0) AS total FROM buckets "
            "WHERE account_id = :account_id AND pool = :pool",
            account_id=account_id,
            pool=pool.value,
        )
        assert row is not None
        return int(row["total"])

    async def hold_in_one_bucket(self, account_id: str, pool: PoolName, amount: int, start: int, buckets: int) -> int | None:
        """Hold `amount` in one bucket that has it and is not locked by another transaction,
        scanning from `start` so that concurrent holds spread over the buckets."""
        row = await self._row(
            # A MATERIALIZED CTE runs once; a subquery in FROM may be rescanned per joined row
            # and pick (and debit) several buckets.
            "WITH pick AS MATERIALIZED (SELECT bucket FROM buckets WHERE account_id = :account_id "
            "    AND pool = :pool AND available >= :amount ORDER BY (bucket + :buckets - :start) % :buckets "
            "    LIMIT 1 FOR UPDATE SKIP LOCKED) "
            "UPDATE buckets AS b SET available = b.available - :amount, held = b.held + :amount "
            "FROM pick WHERE b.account_id = :account_id AND b.pool = :pool AND b.bucket = pick.bucket "
            "RETURNING b.bucket",
            account_id=account_id,
            pool=pool.value,
            amount=amount,
            start=start,
            buckets=buckets,
        )
        return int(row["bucket"]) if row else None

    async def lock_buckets(self, account_id: str) -> list[BucketRow]:
        rows = await self._rows(
            "SELECT pool, bucket, available, held, used FROM buckets WHERE account_id = :account_id "
            "ORDER BY pool, bucket FOR UPDATE",
            account_id=account_id,
        )
        return [BucketRow(PoolName(r["pool"]), r["bucket"], r["available"], r["held"], r["used"]) for r in rows]

    async def write_buckets(self, account_id: str, rows: Sequence[BucketRow]) -> None:
        """Write rows previously locked with lock_buckets."""
        await self._execute(
            "UPDATE buckets AS b SET available = v.available, held = v.held, used = v.used "
            "FROM unnest(CAST(:pools AS text[]), CAST(:buckets AS smallint[]), CAST(:available AS bigint[]), "
            "            CAST(:held AS bigint[]), CAST(:used AS bigint[])) AS v(pool, bucket, available, held, used) "
            "WHERE b.account_id = :account_id AND b.pool = v.pool AND b.bucket = v.bucket",
            account_id=account_id,
            pools=[r.pool.value for r in rows],
            buckets=[r.bucket for r in rows],
            available=[r.available for r in rows],
            held=[r.held for r in rows],
            used=[r.used for r in rows],
        )

    async def shift_bucket(
        self, account_id: str, pool: PoolName, bucket: int, *, available: int, held: int, used: int
    ) -> None:
        """Add deltas to one bucket (a hold part coming back, or being used)."""
        await self._execute(
            "UPDATE buckets SET available = available + :available, held = held + :held, used = used + :used "
            "WHERE account_id = :account_id AND pool = :pool AND bucket = :bucket",
            account_id=account_id,
            pool=pool.value,
            bucket=bucket,
            available=available,
            held=held,
            used=used,
        )

    # --- holds ------------------------------------------------------------------------------

    async def hold_by_request(self, account_id: str, request_id: str) -> Hold | None:
        row = await self._row(
            "SELECT * FROM holds WHERE account_id = :account_id AND request_id = :request_id",
            account_id=account_id,
            request_id=request_id,
        )
        return _hold(row) if row else None

    async def lock_hold(self, account_id: str, hold_id: str) -> tuple[Hold | None, datetime]:
        row = await self._row(
            f"SELECT h.*, {_NOW} AS now FROM holds AS h "
            "WHERE h.account_id = :account_id AND h.hold_id = CAST(:hold_id AS uuid) FOR UPDATE",
            account_id=account_id,
            hold_id=hold_id,
        )
        if row is None:
            _, now = await self.account_state(account_id)
            return None, now
        return _hold(row), row["now"]

    async def insert_hold(self, hold: Hold, now: datetime) -> bool:
        """False when a concurrent Reserve with the same request_id got there first."""
        return bool(
            await self._execute(
                "INSERT INTO holds (account_id, hold_id, request_id, model, input_tokens, max_output_tokens, "
                "ttl_seconds, labels, catalog_version, input_weight, output_weight, input_price, output_price, "
                "allowance_held, allowance_bucket, purchased_held, purchased_bucket, period_start, status, "
                "created_at, expires_at) VALUES (:account_id, CAST(:hold_id AS uuid), :request_id, :model, "
                ":input_tokens, :max_output_tokens, :ttl_seconds, CAST(:labels AS jsonb), :catalog_version, "
                ":input_weight, :output_weight, :input_price, :output_price, :allowance_held, "
                ":allowance_bucket, :purchased_held, :purchased_bucket, :period_start, 'open', :now, "
                ":expires_at) ON CONFLICT (account_id, request_id) DO NOTHING",
                account_id=hold.account_id,
                hold_id=ids.hold_id(hold.reservation_id),
                request_id=hold.request_id,
                model=hold.params.model,
                input_tokens=hold.params.input_tokens,
                max_output_tokens=hold.params.max_output_tokens,
                ttl_seconds=hold.params.ttl_seconds,
                labels=json.dumps(hold.params.labels, sort_keys=True),
                catalog_version=hold.pricing.catalog_version,
                input_weight=hold.pricing.input_weight,
                output_weight=hold.pricing.output_weight,
                input_price=hold.pricing.input_price,
                output_price=hold.pricing.output_price,
                allowance_held=hold.allowance_held,
                allowance_bucket=hold.allowance_bucket,
                purchased_held=hold.purchased_held,
                purchased_bucket=hold.purchased_bucket,
                period_start=hold.period_start,
                now=now,
                expires_at=hold.expires_at,
            )
        )

    async def finish_hold(self, hold: Hold, status: HoldStatus, now: datetime, usage: Usage | None = None) -> None:
        await self._execute(
            "UPDATE holds SET status = :status, settled_at = :now, usage_input_tokens = :input_tokens, "
            "usage_output_tokens = :output_tokens, charged_tokens = :charged, cost_micros = :cost, "
            "unbilled_tokens = :unbilled, late = :late "
            "WHERE account_id = :account_id AND hold_id = CAST(:hold_id AS uuid)",
            account_id=hold.account_id,
            hold_id=ids.hold_id(hold.reservation_id),
            status=status.value,
            now=now,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            charged=usage.charged_tokens if usage else None,
            cost=usage.cost_micros if usage else None,
            unbilled=usage.unbilled_tokens if usage else None,
            late=usage.late if usage else None,
        )

    async def extend_hold(self, hold: Hold, expires_at: datetime) -> None:
        await self._execute(
            "UPDATE holds SET expires_at = :expires_at WHERE account_id = :account_id "
            "AND hold_id = CAST(:hold_id AS uuid)",
            account_id=hold.account_id,
            hold_id=ids.hold_id(hold.reservation_id),
            expires_at=expires_at,
        )

    # --- ledger, balance --------------------------------------------------------------------

    async def append(self, account_id: str, entries: Sequence[LedgerEntry], now: datetime) -> None:
        entries = [e for e in entries if e.amount]
        if not entries:
            return
        await self._execute(
            "INSERT INTO ledger_entries (account_id, created_at, kind, pool, amount, reservation_id, ref, note) "
            "SELECT :account_id, :now, * FROM unnest(CAST(:kinds AS text[]), CAST(:pools AS text[]), "
            "CAST(:amounts AS bigint[]), CAST(:reservations AS text[]), CAST(:refs AS text[]), "
            "CAST(:notes AS text[]))",
            account_id=account_id,
            now=now,
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
            f"SELECT {_ACCOUNT_COLUMNS}, s.* FROM accounts AS a, LATERAL (SELECT "
            "coalesce(sum(available) FILTER (WHERE pool = 'allowance'), 0) AS allowance_remaining, "
            "coalesce(sum(available) FILTER (WHERE pool = 'purchased'), 0) AS purchased_remaining, "
            "coalesce(sum(held) FILTER (WHERE pool = 'allowance'), 0) AS allowance_held, "
            "coalesce(sum(held) FILTER (WHERE pool = 'purchased'), 0) AS purchased_held, "
            "coalesce(sum(used), 0) AS used FROM buckets AS b WHERE b.account_id = a.account_id) AS s "
            "WHERE a.account_id = :account_id",
            account_id=account_id,
        )
        assert row is not None, "balance() is called on an existing account"
        return Balance(
            account_id=account_id,
            plan_id=row["plan_id"],
            period=Period(row["period_start"], row["period_end"]),
            allowance_total=row["allowance_total"],
            allowance_remaining=int(row["allowance_remaining"]),
            purchased_remaining=int(row["purchased_remaining"]),
            allowance_held=int(row["allowance_held"]),
            purchased_held=int(row["purchased_held"]),
            debt=row["debt"],
            used_this_period=int(row["used"]),
        )

    # --- purchases, adjustments -------------------------------------------------------------

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

    # --- sweeper (cross-account reads, no locks; each item is then handled in its own transaction)

    async def expired_holds(self, limit: int) -> list[tuple[str, str]]:
        rows = await self._rows(
            f"SELECT account_id, hold_id::text AS hold_id FROM holds WHERE status = 'open' "
            f"AND expires_at <= {_NOW} ORDER BY expires_at LIMIT :limit",
            limit=limit,
        )
        return [(r["account_id"], r["hold_id"]) for r in rows]

    async def ended_periods(self, limit: int) -> list[str]:
        rows = await self._rows(
            f"SELECT account_id FROM accounts WHERE period_end <= {_NOW} ORDER BY period_end LIMIT :limit",
            limit=limit,
        )
        return [r["account_id"] for r in rows]


def _account_params(account: Account) -> dict[str, Any]:
    return {
        "account_id": account.account_id,
        "plan_id": account.plan_id,
        "monthly_allowance": account.monthly_allowance,
        "period_start": account.period.start,
        "period_end": account.period.end,
        "calendar_periods": account.calendar_periods,
        "bucket_count": account.bucket_count,
        "subscription_ref": account.subscription_ref,
        "plan_event_time": account.plan_event_time,
    }


def _account(row: Mapping[str, Any]) -> Account:
    return Account(
        account_id=row["account_id"],
        plan_id=row["plan_id"],
        monthly_allowance=row["monthly_allowance"],
        period=Period(row["period_start"], row["period_end"]),
        calendar_periods=row["calendar_periods"],
        allowance_total=row["allowance_total"],
        debt=row["debt"],
        bucket_count=row["bucket_count"],
        subscription_ref=row["subscription_ref"],
        plan_event_time=row["plan_event_time"],
    )


def _hold(row: Mapping[str, Any]) -> Hold:
    labels = row["labels"]
    usage = None
    if row["charged_tokens"] is not None:
        usage = Usage(
            input_tokens=row["usage_input_tokens"],
            output_tokens=row["usage_output_tokens"],
            charged_tokens=row["charged_tokens"],
            cost_micros=row["cost_micros"],
            unbilled_tokens=row["unbilled_tokens"],
            late=row["late"],
        )
    return Hold(
        account_id=row["account_id"],
        reservation_id=f"{row['account_id']}/{str(row['hold_id']).replace('-', '')}",
        request_id=row["request_id"],
        params=ReserveParams(
            model=row["model"],
            input_tokens=row["input_tokens"],
            max_output_tokens=row["max_output_tokens"],
            ttl_seconds=row["ttl_seconds"],
            labels=json.loads(labels) if isinstance(labels, str) else dict(labels),
        ),
        pricing=Pricing(
            catalog_version=row["catalog_version"],
            input_weight=row["input_weight"],
            output_weight=row["output_weight"],
            input_price=row["input_price"],
            output_price=row["output_price"],
        ),
        allowance_held=row["allowance_held"],
        allowance_bucket=row["allowance_bucket"],
        purchased_held=row["purchased_held"],
        purchased_bucket=row["purchased_bucket"],
        period_start=row["period_start"],
        status=HoldStatus(row["status"]),
        expires_at=row["expires_at"],
        usage=usage,
    )
