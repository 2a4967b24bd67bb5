"""Bulk data for the benchmark, written with SQL in a few statements (through the service it
would take longer than the benchmark itself). The rows are what the service would have written:
every balance has its ledger entry, so `meter audit` stays clean."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

FUNDING_TOKENS = 10**15  # never runs out during a run: no refusal skews the figures

_ACCOUNTS = """
INSERT INTO accounts (account_id, plan_id, monthly_allowance, period_start, period_end, calendar_periods,
    allowance_total, debt, bucket_count, created_at, updated_at, granted_period_start)
SELECT :prefix || n, 'free', 0, date_trunc('month', now()), date_trunc('month', now()) + interval '1 month',
    true, 0, 0, :buckets, now(), now(), date_trunc('month', now())
FROM generate_series(1, :count) AS n
"""

_BUCKETS = """
INSERT INTO buckets (account_id, pool, bucket, available, held, used)
SELECT :prefix || n, pool, b,
    CASE WHEN pool = 'purchased'
         THEN CAST(:funding AS bigint) / :buckets + CASE WHEN b < CAST(:funding AS bigint) % :buckets THEN 1 ELSE 0 END
         ELSE 0 END, 0, 0
FROM generate_series(1, :count) AS n, unnest(ARRAY['allowance', 'purchased']) AS pool,
     generate_series(0, :buckets - 1) AS b
"""

_FUNDING = """
INSERT INTO ledger_entries (account_id, created_at, kind, pool, amount, ref, note)
SELECT :prefix || n, now(), 'adjustment', 'purchased', CAST(:funding AS bigint), 'bench-funding-' || n, 'meter bench'
FROM generate_series(1, :count) AS n
"""

# History: entries that net to zero per account (a usage and its matching adjustment), so the
# balances stay as funded and the tables carry the weight of a long-lived service.
_HISTORY = """
INSERT INTO ledger_entries (account_id, created_at, kind, pool, amount, ref)
SELECT :prefix || (1 + (n / 2) % :accounts), now() - make_interval(secs => n),
    CASE WHEN n % 2 = 0 THEN 'usage' ELSE 'adjustment' END, 'purchased',
    CASE WHEN n % 2 = 0 THEN -7 ELSE 7 END, 'bench-history'
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS n
"""


async def funded_accounts(engine: AsyncEngine, prefix: str, count: int, buckets: int) -> list[str]:
    """`count` accounts named prefix1..prefixN, each with FUNDING_TOKENS purchased."""
    params = {"prefix": prefix, "count": count, "buckets": buckets, "funding": FUNDING_TOKENS}
    async with engine.begin() as connection:
        for statement in (_ACCOUNTS, _BUCKETS, _FUNDING):
            await connection.execute(text(statement), params)
    return [f"{prefix}{n}" for n in range(1, count + 1)]


async def history(engine: AsyncEngine, prefix: str, accounts: int, entries: int) -> None:
    """A large history: `accounts` more accounts (one bucket each) and `entries` ledger rows."""
    await funded_accounts(engine, prefix, accounts, buckets=1)
    batch = 1_000_000
    for offset in range(0, entries, batch):
        async with engine.begin() as connection:
            await connection.execute(
                text(_HISTORY),
                {"prefix": prefix, "accounts": accounts, "first": offset, "last": min(offset + batch, entries) - 1},
            )
    # What a database that has lived with this data looks like: vacuumed (otherwise autovacuum's
    # pass over ten million fresh rows runs during the measurement), analysed, checkpointed.
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM (ANALYZE) ledger_entries, accounts, buckets"))
        await autocommit.execute(text("CHECKPOINT"))
