"""`meter audit`: prove that balances follow from the ledger.

Per account and pool: buckets (available + held) equal the pool's ledger sum; the debt pool's
ledger sum equals minus the account's debt; the tokens parked as held on buckets equal what the
open holds say they took; and no bucket is negative. Per account, UTC day and model: the daily
usage totals equal the sums of the committed holds (the usage records), and per account the usage
entries of the ledger sum to minus the tokens those records charged. Per balance row: the open
holds it counts (for the concurrent-holds limit) are the open holds whose first part is there.
Per budget: its rows hold what its open calls' parts hold, use what its committed calls of its
period were charged (or cost), and have the rest of its cap available; per account, it counts
its budgets.
Per account, its balance events are numbered 1 to n without gaps, as its counter says; each
purchase and adjustment event has the ledger entries it tells of, with its amount; each debt
event shows the debt it tells of.
Per account, each allowance month is granted at most once and expires at most once: the entries
its start writes (meter_begin_period) name it ('period:<its start>'); the expiries of holds
settled after their month ended name none and are not counted.
Per payment: credited at most once, whatever accounts its events named (a Checkout Session once,
an invoice once, a PaymentIntent once across packs and invoices), and decided as its purchase or
refusal says.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_AUDIT = """
WITH pools AS (
    SELECT account_id, pool, sum(available + held) AS balance, sum(held) AS held,
           min(least(available, held)) AS lowest
    FROM buckets WHERE (CAST(:account_id AS text) IS NULL OR account_id = :account_id)
    GROUP BY account_id, pool
    UNION ALL
    SELECT account_id, 'debt', -debt, 0, -debt FROM accounts
    WHERE (CAST(:account_id AS text) IS NULL OR account_id = :account_id)
),
ledger AS (
    SELECT account_id, pool, sum(amount) AS total FROM ledger_entries
    WHERE (CAST(:account_id AS text) IS NULL OR account_id = :account_id)
    GROUP BY account_id, pool
),
open_holds AS (
    SELECT account_id, pool, sum(amount) AS held FROM holds
    CROSS JOIN LATERAL unnest(part_pools, part_held) AS part (pool, amount)
    WHERE status = 'open' AND (CAST(:account_id AS text) IS NULL OR account_id = :account_id)
    GROUP BY account_id, pool
)
SELECT coalesce(p.account_id, l.account_id) AS account_id, coalesce(p.pool, l.pool) AS pool,
       coalesce(p.balance, 0) AS balance, coalesce(l.total, 0) AS ledger,
       coalesce(p.held, 0) AS held, coalesce(h.held, 0) AS holds_held, coalesce(p.lowest, 0) AS lowest
FROM pools AS p
FULL JOIN ledger AS l ON l.account_id = p.account_id AND l.pool = p.pool
LEFT JOIN open_holds AS h ON h.account_id = coalesce(p.account_id, l.account_id) AND h.pool = coalesce(p.pool, l.pool)
WHERE coalesce(p.balance, 0) <> coalesce(l.total, 0)
   OR coalesce(p.held, 0) <> coalesce(h.held, 0)
   OR (coalesce(p.pool, l.pool) <> 'debt' AND coalesce(p.lowest, 0) < 0)
ORDER BY 1, 2
"""

_USAGE_AUDIT = """
WITH calls AS (
    SELECT account_id, CAST((settled_at AT TIME ZONE 'UTC') AS date) AS day, model, usage_labels AS labels,
           count(*) AS requests, sum(usage_input_tokens) AS input_tokens, sum(usage_output_tokens) AS output_tokens,
           sum(usage_cached_input_tokens) AS cached_input_tokens, sum(usage_cache_write_tokens) AS cache_write_tokens,
           sum(usage_reasoning_tokens) AS reasoning_tokens, sum(charged_tokens) AS charged_tokens,
           sum(cost_micros) AS cost_micros, sum(unbilled_tokens) AS unbilled_tokens
    FROM holds WHERE status = 'committed' AND (CAST(:account_id AS text) IS NULL OR account_id = :account_id)
    GROUP BY 1, 2, 3, 4
),
totals AS (
    SELECT account_id, day, model, labels, sum(requests) AS requests, sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens, sum(cached_input_tokens) AS cached_input_tokens,
           sum(cache_write_tokens) AS cache_write_tokens, sum(reasoning_tokens) AS reasoning_tokens,
           sum(charged_tokens) AS charged_tokens, sum(cost_micros) AS cost_micros,
           sum(unbilled_tokens) AS unbilled_tokens
    FROM usage_daily WHERE (CAST(:account_id AS text) IS NULL OR account_id = :account_id)
    GROUP BY 1, 2, 3, 4
),
charged AS (
    SELECT account_id, sum(charged_tokens) AS tokens FROM calls GROUP BY 1
),
ledger AS (
    SELECT account_id, -sum(amount) AS tokens FROM ledger_entries
    WHERE kind = 'usage' AND (CAST(:account_id AS text) IS NULL OR account_id = :account_id)
    GROUP BY 1
)
SELECT coalesce(c.account_id, t.account_id) AS account_id,
       'usage of ' || coalesce(c.model, t.model)
       || CASE WHEN coalesce(c.labels, t.labels) <> '{}' THEN ' labelled ' || CAST(coalesce(c.labels, t.labels) AS text)
          ELSE '' END
       || ' on ' || coalesce(c.day, t.day) || ': the calls sum to '
       || coalesce(c.requests || ' requests, ' || c.input_tokens || ' in, ' || c.cached_input_tokens
                   || ' cached in, ' || c.cache_write_tokens || ' cache writes, ' || c.output_tokens || ' out, '
                   || c.reasoning_tokens || ' reasoning, ' || c.charged_tokens || ' charged, ' || c.cost_micros
                   || ' micro-USD, ' || c.unbilled_tokens || ' unbilled', 'nothing')
       || ' but the daily totals to '
       || coalesce(t.requests || ' requests, ' || t.input_tokens || ' in, ' || t.cached_input_tokens
                   || ' cached in, ' || t.cache_write_tokens || ' cache writes, ' || t.output_tokens || ' out, '
                   || t.reasoning_tokens || ' reasoning, ' || t.charged_tokens || ' charged, ' || t.cost_micros
                   || ' micro-USD, ' || t.unbilled_tokens || ' unbilled', 'nothing') AS problem
FROM calls AS c FULL JOIN totals AS t USING (account_id, day, model, labels)
WHERE (c.requests, c.input_tokens, c.cached_input_tokens, c.cache_write_tokens, c.output_tokens, c.reasoning_tokens,
       c.charged_tokens, c.cost_micros, c.unbilled_tokens)
      IS DISTINCT FROM (t.requests, t.input_tokens, t.cached_input_tokens, t.cache_write_tokens, t.output_tokens,
                        t.reasoning_tokens, t.charged_tokens, t.cost_micros, t.unbilled_tokens)
UNION ALL
SELECT coalesce(c.account_id, l.account_id),
       'the committed calls charged ' || coalesce(c.tokens, 0) || ' tokens but the usage entries of the ledger sum to '
       || -coalesce(l.tokens, 0)
FROM charged AS c FULL JOIN ledger AS l USING (account_id)
WHERE coalesce(c.tokens, 0) <> coalesce(l.tokens, 0)
ORDER BY 1, 2
"""

# Each budget counts, in its period, what its committed calls were charged (or cost) and holds
# what its open calls' parts hold: every call a hold with its budget among its parts.
_BUDGETS_AUDIT = """
WITH parts AS (
    SELECT h.account_id, p.budget_id, p.period_start,
           CASE WHEN h.status = 'open' THEN p.held ELSE 0 END AS held,
           CASE WHEN h.status <> 'committed' THEN 0 WHEN g.unit = 'tokens' THEN h.charged_tokens
                ELSE h.cost_micros END AS used
    FROM holds AS h
    CROSS JOIN LATERAL unnest(h.budget_ids, h.budget_held, h.budget_periods) AS p (budget_id, held, period_start)
    JOIN budgets AS g ON g.account_id = h.account_id AND g.budget_id = p.budget_id
    WHERE h.budget_ids IS NOT NULL AND p.period_start = g.period_start
      AND (CAST(:account_id AS text) IS NULL OR h.account_id = :account_id)
),
calls AS (
    SELECT account_id, budget_id, sum(held) AS held, sum(used) AS used FROM parts GROUP BY 1, 2
),
rows AS (
    SELECT b.account_id, b.budget_id, sum(b.held) AS held, sum(b.used) AS used, sum(b.available) AS available,
           bool_and(b.unit = g.unit AND b.period_start = g.period_start) AS agree
    FROM budget_buckets AS b JOIN budgets AS g ON g.account_id = b.account_id AND g.budget_id = b.budget_id
    WHERE (CAST(:account_id AS text) IS NULL OR b.account_id = :account_id)
    GROUP BY 1, 2
)
SELECT g.account_id,
       'budget of ' || g.label_key || '=' || g.label_value || ': its rows hold ' || r.held || ', use ' || r.used
       || ' and have ' || r.available || ' available of ' || g.cap || ' but its calls hold '
       || coalesce(c.held, 0) || ' and used ' || coalesce(c.used, 0)
       || CASE WHEN r.agree THEN '' ELSE ' (a row counts another unit or period than the budget)' END AS problem
FROM budgets AS g
JOIN rows AS r ON r.account_id = g.account_id AND r.budget_id = g.budget_id
LEFT JOIN calls AS c ON c.account_id = g.account_id AND c.budget_id = g.budget_id
WHERE (CAST(:account_id AS text) IS NULL OR g.account_id = :account_id)
  AND (r.held <> coalesce(c.held, 0) OR r.used <> coalesce(c.used, 0) OR r.available + r.held + r.used <> g.cap
       OR NOT r.agree)
UNION ALL
SELECT a.account_id, 'counts ' || a.budget_count || ' budgets but has ' || count(g.budget_id)
FROM accounts AS a LEFT JOIN budgets AS g ON g.account_id = a.account_id
WHERE (CAST(:account_id AS text) IS NULL OR a.account_id = :account_id)
GROUP BY a.account_id, a.budget_count HAVING a.budget_count <> count(g.budget_id)
ORDER BY 1, 2
"""

_OPEN_HOLDS_AUDIT = """
WITH counted AS (
    SELECT account_id, pool, bucket, open_holds FROM buckets
    WHERE open_holds <> 0 AND (CAST(:account_id AS text) IS NULL OR account_id = :account_id)
),
open AS (
    SELECT account_id, part_pools[1] AS pool, part_bucket AS bucket, count(*) AS n
    FROM holds
    WHERE status = 'open' AND cardinality(part_pools) > 0
      AND (CAST(:account_id AS text) IS NULL OR account_id = :account_id)
    GROUP BY 1, 2, 3
)
SELECT coalesce(c.account_id, o.account_id) AS account_id,
       coalesce(c.pool, o.pool) || ' bucket ' || coalesce(c.bucket, o.bucket) || ' counts '
       || coalesce(c.open_holds, 0) || ' open holds but ' || coalesce(o.n, 0) || ' are open there' AS problem
FROM counted AS c FULL JOIN open AS o USING (account_id, pool, bucket)
WHERE coalesce(c.open_holds, 0) <> coalesce(o.n, 0)
ORDER BY 1, 2
"""

_EVENTS_AUDIT = """
WITH events AS (
    SELECT * FROM balance_events WHERE (CAST(:account_id AS text) IS NULL OR account_id = :account_id)
),
numbered AS (
    SELECT e.account_id, count(*) AS n, max(e.sequence) AS last, s.last_sequence
    FROM events AS e LEFT JOIN balance_event_sequences AS s USING (account_id)
    GROUP BY e.account_id, s.last_sequence
)
SELECT account_id, 'its ' || n || ' events are numbered up to ' || last || ' and its counter is at '
       || coalesce(last_sequence, 0) AS problem
FROM numbered WHERE n <> last OR last <> coalesce(last_sequence, 0)
UNION ALL
SELECT e.account_id, 'event ' || e.sequence || ' tells of ' || (e.payload ->> 'tokens') || ' tokens bought with '
       || (e.payload ->> 'payment_ref') || ' but the ledger has no such purchase'
FROM events AS e
WHERE e.type = 'purchase.credited' AND NOT EXISTS (
    SELECT 1 FROM ledger_entries AS l
    WHERE l.account_id = e.account_id AND l.kind = 'purchase' AND l.ref = e.payload ->> 'payment_ref'
      AND l.amount = CAST(e.payload ->> 'tokens' AS bigint)
)
UNION ALL
SELECT e.account_id, 'event ' || e.sequence || ' tells of an adjustment of ' || (e.payload ->> 'delta')
       || ' but the ledger''s entries of ' || (e.payload ->> 'request_id') || ' sum to ' || coalesce(a.total, 0)
FROM events AS e
LEFT JOIN LATERAL (
    SELECT sum(l.amount) AS total FROM ledger_entries AS l
    WHERE l.account_id = e.account_id AND l.kind = 'adjustment' AND l.ref = e.payload ->> 'request_id'
) AS a ON true
WHERE e.type = 'balance.adjusted' AND coalesce(a.total, 0) <> CAST(e.payload ->> 'delta' AS bigint)
UNION ALL
SELECT account_id, 'events tell of ' || coalesce(t.tokens, 0) || ' tokens of allowance granted but the ledger has '
       || coalesce(l.tokens, 0)
FROM (SELECT account_id, sum(CAST(payload ->> 'tokens' AS bigint)) AS tokens
      FROM events WHERE type = 'allowance.granted' GROUP BY account_id) AS t
FULL JOIN (SELECT account_id, sum(amount) AS tokens FROM ledger_entries
           WHERE kind = 'subscription_grant' AND (CAST(:account_id AS text) IS NULL OR account_id = :account_id)
           GROUP BY account_id) AS l USING (account_id)
WHERE coalesce(t.tokens, 0) <> coalesce(l.tokens, 0)
UNION ALL
SELECT account_id, 'events tell of ' || coalesce(t.tokens, 0) || ' tokens taken back by refunds and disputes but the '
       || 'ledger has ' || coalesce(l.tokens, 0)
FROM (SELECT account_id, sum(CASE WHEN type = 'dispute.won' THEN -1 ELSE 1 END * CAST(payload ->> 'tokens' AS bigint))
             AS tokens
      FROM events WHERE type IN ('credit.reversed', 'dispute.won') GROUP BY account_id) AS t
FULL JOIN (SELECT account_id, -sum(amount) AS tokens FROM ledger_entries
           WHERE kind IN ('refund', 'dispute_freeze', 'dispute_release')
             AND (CAST(:account_id AS text) IS NULL OR account_id = :account_id)
           GROUP BY account_id) AS l USING (account_id)
WHERE coalesce(t.tokens, 0) <> coalesce(l.tokens, 0)
UNION ALL
SELECT coalesce(r.account_id, e.account_id), 'payment ' || coalesce(r.payment_ref, e.payload ->> 'payment_ref')
       || ' is refused ' || (r.payment_ref IS NOT NULL)::int || ' time(s) but told '
       || count(e.sequence) || ' time(s)'
FROM (SELECT * FROM refused_purchases WHERE (CAST(:account_id AS text) IS NULL OR account_id = :account_id)) AS r
FULL JOIN (SELECT * FROM events WHERE type = 'purchase.refused') AS e
    ON e.account_id = r.account_id AND e.payload ->> 'payment_ref' = r.payment_ref
GROUP BY 1, r.payment_ref, e.payload ->> 'payment_ref'
HAVING r.payment_ref IS NULL OR count(e.sequence) <> 1
UNION ALL
SELECT account_id, 'event ' || sequence || ' (' || type || ') shows a debt of ' || (payload -> 'balance' ->> 'debt')
FROM events
WHERE (type = 'debt.created' AND (CAST(payload -> 'balance' ->> 'debt' AS bigint) <= 0
        OR payload ->> 'debt' <> payload -> 'balance' ->> 'debt'))
   OR (type = 'debt.cleared' AND CAST(payload -> 'balance' ->> 'debt' AS bigint) <> 0)
ORDER BY 1, 2
"""

# Payments are not an account's until decided: these checks read across accounts, and with an
# account given, report the payments that involve it.
_PAYMENTS_AUDIT = """
WITH purchases_seen AS (
    SELECT * FROM purchases
    WHERE CAST(:account_id AS text) IS NULL OR payment_ref IN (
        SELECT payment_ref FROM purchases WHERE account_id = :account_id
        UNION SELECT payment_ref FROM pack_payments WHERE account_id = :account_id)
),
intents AS (
    SELECT account_id, payment_intent, 'pack ' || payment_ref AS what FROM purchases WHERE payment_intent IS NOT NULL
    UNION ALL
    SELECT account_id, payment_intent, 'invoice ' || invoice_ref FROM subscription_payments
    WHERE payment_intent IS NOT NULL
)
SELECT min(account_id) AS account_id, 'payment ' || payment_ref || ' is credited ' || count(*) || ' times, to '
       || string_agg(account_id, ', ' ORDER BY account_id) AS problem
FROM purchases_seen GROUP BY payment_ref HAVING count(*) > 1
UNION ALL
SELECT min(account_id), 'invoice ' || invoice_ref || ' is recorded ' || count(*) || ' times, on '
       || string_agg(account_id, ', ' ORDER BY account_id)
FROM subscription_payments GROUP BY invoice_ref
HAVING count(*) > 1 AND (CAST(:account_id AS text) IS NULL OR bool_or(account_id = :account_id))
UNION ALL
SELECT min(account_id), 'PaymentIntent ' || payment_intent || ' is credited ' || count(*) || ' times: '
       || string_agg(what || ' to ' || account_id, ', ' ORDER BY what, account_id)
FROM intents GROUP BY payment_intent
HAVING count(*) > 1 AND (CAST(:account_id AS text) IS NULL OR bool_or(account_id = :account_id))
UNION ALL
SELECT u.account_id, 'payment ' || u.payment_ref || ' is credited to it but '
       || coalesce('decided ' || d.outcome || ' on ' || d.account_id, 'decided nowhere')
FROM purchases_seen AS u LEFT JOIN pack_payments AS d ON d.payment_ref = u.payment_ref
WHERE d.payment_ref IS NULL OR d.outcome <> 'credited' OR d.account_id <> u.account_id
UNION ALL
SELECT d.account_id, 'payment ' || d.payment_ref || ' is decided credited to it but no purchase of it is there'
FROM pack_payments AS d
WHERE d.outcome = 'credited' AND (CAST(:account_id AS text) IS NULL OR d.account_id = :account_id)
  AND NOT EXISTS (SELECT 1 FROM purchases AS p WHERE p.account_id = d.account_id AND p.payment_ref = d.payment_ref)
UNION ALL
SELECT d.account_id, 'payment ' || d.payment_ref || ' is decided refused with no refusal recorded'
FROM pack_payments AS d
WHERE d.outcome = 'refused' AND (CAST(:account_id AS text) IS NULL OR d.account_id = :account_id)
  AND NOT EXISTS (SELECT 1 FROM refused_purchases AS r WHERE r.payment_ref = d.payment_ref)
ORDER BY 1, 2
"""

# A month's start writes at most one grant and one expiry, both named after it; a second of either
# is allowance given or taken twice, though buckets, ledger and events may agree.
_MONTHS_AUDIT = """
SELECT account_id,
       'allowance month ' || substr(ref, 8) || ' is '
       || CASE kind WHEN 'subscription_grant' THEN 'granted ' ELSE 'expired ' END || count(*) || ' times ('
       || string_agg(CAST(abs(amount) AS text), ', ' ORDER BY entry_id) || ' tokens)' AS problem
FROM ledger_entries
WHERE kind IN ('subscription_grant', 'expiry') AND ref LIKE 'period:%'
  AND (CAST(:account_id AS text) IS NULL OR account_id = :account_id)
GROUP BY account_id, kind, ref HAVING count(*) > 1
ORDER BY 1, 2
"""

_COUNT = "SELECT count(*) FROM accounts WHERE (CAST(:account_id AS text) IS NULL OR account_id = :account_id)"


@dataclass(frozen=True)
class Discrepancy:
    account_id: str
    pool: str
    balance: int
    ledger: int
    held: int
    holds_held: int

    def __str__(self) -> str:
        if self.balance != self.ledger:
            what = "debt" if self.pool == "debt" else "available + held"
            shown = -self.balance if self.pool == "debt" else self.balance
            return f"{self.account_id} {self.pool}: {what} is {shown} but the ledger sums to {self.ledger}"
        if self.held != self.holds_held:
            return f"{self.account_id} {self.pool}: buckets hold {self.held} but open holds took {self.holds_held}"
        return f"{self.account_id} {self.pool}: a bucket is negative"


@dataclass(frozen=True)
class Mismatch:
    """A check other than a pool's sums failed: usage totals, open-hold counts, events."""

    account_id: str
    problem: str

    def __str__(self) -> str:
        return f"{self.account_id} {self.problem}"


@dataclass(frozen=True)
class AuditReport:
    accounts: int
    discrepancies: list[Discrepancy | Mismatch]

    @property
    def clean(self) -> bool:
        return not self.discrepancies


async def audit(engine: AsyncEngine, account_id: str | None = None) -> AuditReport:
    """One repeatable-read snapshot, so concurrent traffic cannot produce a false alarm."""
    async with engine.connect() as connection:
        await connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        rows = (await connection.execute(text(_AUDIT), {"account_id": account_id})).mappings().all()
        usage = [
            *(await connection.execute(text(_USAGE_AUDIT), {"account_id": account_id})).mappings().all(),
            *(await connection.execute(text(_OPEN_HOLDS_AUDIT), {"account_id": account_id})).mappings().all(),
            *(await connection.execute(text(_BUDGETS_AUDIT), {"account_id": account_id})).mappings().all(),
            *(await connection.execute(text(_EVENTS_AUDIT), {"account_id": account_id})).mappings().all(),
            *(await connection.execute(text(_PAYMENTS_AUDIT), {"account_id": account_id})).mappings().all(),
            *(await connection.execute(text(_MONTHS_AUDIT), {"account_id": account_id})).mappings().all(),
        ]
        accounts = (await connection.execute(text(_COUNT), {"account_id": account_id})).scalar_one()
        await connection.rollback()
    return AuditReport(
        accounts=accounts,
        discrepancies=[
            Discrepancy(
                r["account_id"], r["pool"], int(r["balance"]), int(r["ledger"]), int(r["held"]), int(r["holds_held"])
            )
            for r in rows
        ]
        + [Mismatch(r["account_id"], r["problem"]) for r in usage],
    )
