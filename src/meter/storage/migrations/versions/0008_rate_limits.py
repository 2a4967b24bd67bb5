"""Rate limits per account: the counts they are judged on, kept where Reserve already writes.

Every Reserve already updates one balance row (bucket) of its account under that row's lock, so
the counts live there too: `rate_window` (the UTC minute the counts belong to), `rate_requests`
and `rate_tokens` (Reserves started and tokens they held in that minute), and `open_holds` (open
holds whose first part is in this row: the allowance bucket when the hold has allowance, else the
purchased one, as usage_daily counts them). An account's count is the sum over its rows, read
without locks; no row is written by more Reserves than before, so a busy account stays spread
over its rows (a single counter row would serialise it again). The sweeper, Commit and Release
take `open_holds` back down on the same row the hold's tokens come back to.

accounts.requests_per_minute / tokens_per_minute / concurrent_holds: an account's own limits
(enterprise, through SetPlan); NULL: the plan's, from the catalog.

meter_reserve_fast takes the catalog's limits of every plan (small arrays; the catalog is the
service's, so replicas need no shared table) and, when the account has a limit, returns 'slow'
if the Reserve would go over it: the general path then refuses with the limit and a retry delay.
It counts every Reserve it makes. meter_commit_fast takes `open_holds` back down.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

import importlib

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_RESERVE_0006 = importlib.import_module("meter.storage.migrations.versions.0006_usage").RESERVE
_COMMIT_0007 = importlib.import_module("meter.storage.migrations.versions.0007_callers").COMMIT

TABLES = """
ALTER TABLE buckets
    ADD COLUMN rate_window timestamptz,
    ADD COLUMN rate_requests bigint NOT NULL DEFAULT 0 CHECK (rate_requests >= 0),
    ADD COLUMN rate_tokens bigint NOT NULL DEFAULT 0 CHECK (rate_tokens >= 0),
    ADD COLUMN open_holds integer NOT NULL DEFAULT 0 CHECK (open_holds >= 0);

UPDATE buckets AS b SET open_holds = c.n
FROM (SELECT account_id, CASE WHEN allowance_held > 0 THEN 'allowance' ELSE 'purchased' END AS pool,
          CASE WHEN allowance_held > 0 THEN allowance_bucket ELSE purchased_bucket END AS bucket, count(*) AS n
      FROM holds WHERE status = 'open' GROUP BY 1, 2, 3) AS c
WHERE b.account_id = c.account_id AND b.pool = c.pool AND b.bucket = c.bucket;

ALTER TABLE accounts
    ADD COLUMN requests_per_minute bigint CHECK (requests_per_minute > 0),
    ADD COLUMN tokens_per_minute bigint CHECK (tokens_per_minute > 0),
    ADD COLUMN concurrent_holds bigint CHECK (concurrent_holds > 0)
"""

_LIMIT_CHECK = """    v_first := p_start % v_account.bucket_count;
    v_index := array_position(p_plans, v_account.plan_id);
    v_rpm := coalesce(v_account.requests_per_minute, nullif(p_requests_per_minute[v_index], 0));
    v_tpm := coalesce(v_account.tokens_per_minute, nullif(p_tokens_per_minute[v_index], 0));
    v_holds := coalesce(v_account.concurrent_holds, nullif(p_concurrent_holds[v_index], 0));
    IF v_rpm IS NOT NULL OR v_tpm IS NOT NULL OR v_holds IS NOT NULL THEN
        SELECT coalesce(sum(b.rate_requests) FILTER (WHERE b.rate_window = v_window), 0),
               coalesce(sum(b.rate_tokens) FILTER (WHERE b.rate_window = v_window), 0),
               coalesce(sum(b.open_holds), 0)
        INTO v_requests, v_tokens, v_open
        FROM buckets AS b WHERE b.account_id = p_account;
        IF v_requests + 1 > v_rpm OR v_tokens + p_amount > v_tpm OR v_open + 1 > v_holds THEN
            RETURN NEXT;  -- over a limit: the general path refuses, with the limit and a retry delay
            RETURN;
        END IF;
    END IF;
"""


def _edited(function: str, edits: tuple[tuple[str, str], ...], name: str) -> str:
    for old, new in edits:
        assert function.count(old) == 1, f"{name} changed: {old!r}"
        function = function.replace(old, new)
    return function


RESERVE = _edited(
    _RESERVE_0006,
    (
        (
            "    p_clock_offset double precision)",
            "    p_clock_offset double precision, p_plans text[], p_requests_per_minute bigint[],\n"
            "    p_tokens_per_minute bigint[], p_concurrent_holds bigint[])",
        ),
        (
            "    v_first smallint;\n",
            "    v_first smallint;\n"
            "    v_window timestamptz := date_trunc('minute', v_now);\n"
            "    v_index integer;\n"
            "    v_rpm bigint;\n"
            "    v_tpm bigint;\n"
            "    v_holds bigint;\n"
            "    v_requests bigint;\n"
            "    v_tokens bigint;\n"
            "    v_open bigint;\n",
        ),
        ("    v_first := p_start % v_account.bucket_count;\n", _LIMIT_CHECK),
        (
            "        UPDATE buckets AS b SET available = b.available - p_amount, held = b.held + p_amount\n",
            "        UPDATE buckets AS b SET available = b.available - p_amount, held = b.held + p_amount,\n"
            "            open_holds = b.open_holds + 1,\n"
            "            rate_requests = CASE WHEN b.rate_window = v_window THEN b.rate_requests + 1 ELSE 1 END,\n"
            "            rate_tokens = CASE WHEN b.rate_window = v_window THEN b.rate_tokens + p_amount\n"
            "                ELSE p_amount END,\n"
            "            rate_window = v_window\n",
        ),
    ),
    "0006's meter_reserve_fast",
)

COMMIT = _edited(
    _COMMIT_0007,
    (
        (
            "            held = b.held - v_hold.allowance_held, used = b.used + v_used_allowance\n",
            "            held = b.held - v_hold.allowance_held, used = b.used + v_used_allowance,\n"
            "            open_holds = b.open_holds - 1\n",
        ),
        (
            "            held = b.held - v_hold.purchased_held, used = b.used + v_used_purchased\n",
            "            held = b.held - v_hold.purchased_held, used = b.used + v_used_purchased,\n"
            "            open_holds = b.open_holds - CASE WHEN v_hold.allowance_held > 0 THEN 0 ELSE 1 END\n",
        ),
    ),
    "0007's meter_commit_fast",
)


def upgrade() -> None:
    for statement in TABLES.split(";\n\n"):
        op.execute(statement)
    op.execute("DROP FUNCTION meter_reserve_fast")
    op.execute(RESERVE)
    op.execute("DROP FUNCTION meter_commit_fast")
    op.execute(COMMIT)


def downgrade() -> None:
    op.execute("DROP FUNCTION meter_commit_fast")
    op.execute(_COMMIT_0007)
    op.execute("DROP FUNCTION meter_reserve_fast")
    op.execute(_RESERVE_0006)
    op.execute(
        "ALTER TABLE accounts DROP COLUMN requests_per_minute, DROP COLUMN tokens_per_minute, "
        "DROP COLUMN concurrent_holds"
    )
    op.execute(
        "ALTER TABLE buckets DROP COLUMN rate_window, DROP COLUMN rate_requests, DROP COLUMN rate_tokens, "
        "DROP COLUMN open_holds"
    )
