"""Bulk data for the benchmark, written with SQL in a few statements (through the service it
would take longer than the benchmark itself). The rows are what the service would have written:
every balance has its ledger entry, so `meter audit` stays clean."""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

FUNDING_TOKENS = 10**15  # never runs out during a run: no refusal skews the figures
# Accounts are on the enterprise plan, which has no catalog rate limits: the scenarios measure
# metering, and a limit would cap them.

# `meter bench --against` seeds an older revision's database with this code: before allowance
# months (migration 0002) accounts had a calendar_periods column, which the seed leaves to this
# default (calendar months, as the seeded accounts are on).
_OLDER_SCHEMA = """
DO $$ BEGIN
    IF EXISTS (SELECT FROM information_schema.columns WHERE table_schema = current_schema()
        AND table_name = 'accounts' AND column_name = 'calendar_periods') THEN
        ALTER TABLE accounts ALTER COLUMN calendar_periods SET DEFAULT true;
    END IF;
END $$
"""

_ACCOUNTS = """
INSERT INTO accounts (account_id, plan_id, monthly_allowance, period_start, period_end,
    allowance_total, debt, bucket_count, created_at, updated_at, granted_period_start)
SELECT :prefix || n, 'enterprise', 0, date_trunc('month', now()), date_trunc('month', now()) + interval '1 month',
    0, 0, :buckets, now(), now(), date_trunc('month', now())
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
INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, ref, note)
SELECT :prefix || n, now(), 'meter-bench', 'adjustment', 'purchased', CAST(:funding AS bigint),
    'bench-funding-' || n, 'meter bench'
FROM generate_series(1, :count) AS n
"""

# History: entries that net to zero per account (an adjustment and its correction), so the
# balances stay as funded and the tables carry the weight of a long-lived service. (Usage entries
# would need the committed holds and daily totals they come from: see `calls` below.)
_HISTORY = """
INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, ref)
SELECT :prefix || (1 + (n / 2) % :accounts), now() - make_interval(secs => n), 'meter-bench', 'adjustment', 'purchased',
    CASE WHEN n % 2 = 0 THEN -7 ELSE 7 END, 'bench-history'
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS n
"""


@dataclass(frozen=True)
class RateLimits:
    """An account's own rate limits, as SetPlan sets them."""

    requests_per_minute: int
    tokens_per_minute: int
    concurrent_holds: int


# Limits so high that no scenario reaches them: Reserve checks them on every call, refuses none.
UNREACHED_LIMITS = RateLimits(requests_per_minute=10**12, tokens_per_minute=10**15, concurrent_holds=10**9)


@dataclass(frozen=True)
class Accounts:
    """The funded accounts a closed-loop scenario runs on."""

    prefix: str
    many: bool  # as many as the run's accounts option says, else one
    buckets: int = 16
    limits: RateLimits | None = None
    budgeted: bool = False  # budgets on its calls' team (tokens) and API key (cost) that none reaches

    async def fund(self, engine: AsyncEngine, many: int) -> list[str]:
        accounts = await funded_accounts(engine, self.prefix, many if self.many else 1, self.buckets, self.limits)
        if self.budgeted:
            await unreached_budgets(engine, accounts)
        return accounts


# The closed-loop scenarios every side-by-side and default run names alike.
MANY = Accounts("bench-many-", many=True)
HOT = Accounts("bench-hot-", many=False)
SINGLE_BUCKET = Accounts("bench-hot1-", many=False, buckets=1)  # what METER_BUCKETS=1 creates
# The same loads on accounts whose rate limits every Reserve checks and none reaches.
MANY_LIMITED = Accounts("bench-lim-", many=True, limits=UNREACHED_LIMITS)
HOT_LIMITED = Accounts("bench-hotlim-", many=False, limits=UNREACHED_LIMITS)
# Labelled calls on accounts whose budgets every Reserve and Commit counts and none reaches.
MANY_BUDGETED = Accounts("bench-budget-", many=True, budgeted=True)


def call_labels(account: str, dice: float) -> dict[str, str]:
    """What a product's proxy labels a call with: the team and API key of the account (few
    values), one of a handful of agents, and a session of its own (not summed)."""
    number = zlib.crc32(account.encode())
    return {
        "team": f"team-{number % 4}",
        "api_key": f"key-{number % 16}",
        "agent": f"agent-{int(dice * 5)}",
        "session": uuid.uuid4().hex,
    }


async def unreached_budgets(engine: AsyncEngine, accounts: list[str]) -> None:
    """A tokens budget on each account's team and a cost budget on its API key, too large to reach."""
    async with engine.begin() as connection:
        for account in accounts:
            labels = call_labels(account, 0.0)
            for key, unit in (("team", "tokens"), ("api_key", "cost_micros")):
                await connection.execute(
                    text("SELECT outcome FROM meter_set_budget(:account, :key, :value, :unit, :cap, NULL, now())"),
                    {"account": account, "key": key, "value": labels[key], "unit": unit, "cap": 10**15},
                )


_LIMITS = """
UPDATE accounts SET requests_per_minute = :rpm, tokens_per_minute = :tpm, concurrent_holds = :holds
WHERE account_id LIKE :prefix || '%'
"""


async def funded_accounts(
    engine: AsyncEngine, prefix: str, count: int, buckets: int, limits: RateLimits | None = None
) -> list[str]:
    """`count` accounts named prefix1..prefixN, each with FUNDING_TOKENS purchased, and with
    `limits` as their own rate limits when given (else none: enterprise accounts)."""
    params = {"prefix": prefix, "count": count, "buckets": buckets, "funding": FUNDING_TOKENS}
    async with engine.begin() as connection:
        for statement in (_OLDER_SCHEMA, _ACCOUNTS, _BUCKETS, _FUNDING):
            await connection.execute(text(statement), params)
        if limits is not None:
            await connection.execute(
                text(_LIMITS),
                {
                    "prefix": prefix,
                    "rpm": limits.requests_per_minute,
                    "tpm": limits.tokens_per_minute,
                    "holds": limits.concurrent_holds,
                },
            )
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
    await settle_in(engine)


# Committed calls of one account spread evenly over the last `days` days (newest last), each a
# hold, its usage entry and its share of the daily totals, as Commit writes them: 4 input tokens,
# 2 cached, 3 output (8 charged), labelled with one of five teams (summed by the packaged
# catalog) and a session of its own (not summed).
_CALL_HOLDS = """
INSERT INTO holds (account_id, hold_id, request_id, model, input_tokens, max_output_tokens, ttl_seconds, labels,
    catalog_version, input_weight, output_weight, input_price, output_price, cached_input_weight, cache_write_weight,
    reasoning_weight, cached_input_price, cache_write_price, reasoning_price, usage_labels, held,
    part_pools, part_held, part_bucket, period_start, status, created_at, expires_at, settled_at,
    usage_input_tokens, usage_output_tokens, usage_cached_input_tokens, charged_tokens, cost_micros, unbilled_tokens,
    late)
SELECT :account, CAST(md5(:account || n) AS uuid), 'bench-call-' || n,
    (ARRAY['claude-sonnet-4-5', 'claude-haiku-4-5', 'gpt-4o', 'gpt-4o-mini'])[1 + n % 4],
    4, 3, 600, jsonb_build_object('agent', 'bench', 'team', 'team-' || n % 5, 'session', 's-' || n), 'bench',
    1000000, 1000000, 0, 0, 500000, 1000000, 1000000, 0, 0, 0,
    jsonb_build_object('agent', 'bench', 'team', 'team-' || n % 5), 8, ARRAY['purchased'], ARRAY[8], n % :buckets,
    date_trunc('month', now()), 'committed', t, t + interval '10 minutes', t, 4, 3, 2, 8, 11, 0, false
FROM generate_series(1, CAST(:calls AS bigint)) AS n,
    LATERAL (SELECT now() - make_interval(secs => :seconds * (:calls - n + 1) / :calls)) AS moment(t)
"""

_CALL_ENTRIES = """
INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, reservation_id)
SELECT account_id, settled_at, 'meter-bench', 'usage', 'purchased', -charged_tokens,
    account_id || '/' || replace(CAST(hold_id AS text), '-', '')
FROM holds WHERE account_id = :account AND status = 'committed' ORDER BY settled_at
"""

_CALL_BUCKETS = """
UPDATE buckets AS b SET available = b.available - s.tokens, used = b.used + s.tokens
FROM (SELECT part_bucket AS bucket, sum(charged_tokens) AS tokens FROM holds
      WHERE account_id = :account AND status = 'committed' GROUP BY 1) AS s
WHERE b.account_id = :account AND b.pool = 'purchased' AND b.bucket = s.bucket
"""

_CALL_TOTALS = """
INSERT INTO usage_daily (account_id, day, model, labels, pool, bucket, requests, input_tokens, output_tokens,
    cached_input_tokens, charged_tokens, cost_micros, unbilled_tokens)
SELECT account_id, CAST((settled_at AT TIME ZONE 'UTC') AS date), model, usage_labels, 'purchased', part_bucket,
    count(*), sum(usage_input_tokens), sum(usage_output_tokens), sum(usage_cached_input_tokens), sum(charged_tokens),
    sum(cost_micros), sum(unbilled_tokens)
FROM holds WHERE account_id = :account AND status = 'committed'
GROUP BY 1, 2, 3, 4, 5, 6
"""


async def calls(engine: AsyncEngine, account: str, count: int, *, days: int = 90, buckets: int = 16) -> None:
    """`count` committed calls of a funded account (one created with `buckets` buckets)."""
    params = {"account": account, "calls": count, "seconds": days * 86_400 - 60, "buckets": buckets}
    async with engine.begin() as connection:
        for statement in (_CALL_HOLDS, _CALL_ENTRIES, _CALL_BUCKETS, _CALL_TOTALS):
            await connection.execute(text(statement), params)


async def folded(engine: AsyncEngine) -> None:
    """Past days' usage totals folded, as the sweeper of a running meter would have folded them."""
    while True:
        async with engine.begin() as connection:
            day = (
                await connection.execute(text("SELECT meter_fold_usage_days(CAST(now() AS date), 10000)"))
            ).scalar_one()
        if day is None:
            return


async def settle_in(engine: AsyncEngine) -> None:
    """What a database that has lived with this data looks like: vacuumed (otherwise autovacuum's
    pass over millions of fresh rows runs during the measurement), analysed, checkpointed."""
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM (ANALYZE) ledger_entries, accounts, buckets, holds, usage_daily"))
        await autocommit.execute(text("CHECKPOINT"))
