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

Every statement is frozen here in full, as it ran when this migration was written: no
migration imports or edits another's text.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = (
    """
ALTER TABLE buckets
    ADD COLUMN rate_window timestamptz,
    ADD COLUMN rate_requests bigint NOT NULL DEFAULT 0 CHECK (rate_requests >= 0),
    ADD COLUMN rate_tokens bigint NOT NULL DEFAULT 0 CHECK (rate_tokens >= 0),
    ADD COLUMN open_holds integer NOT NULL DEFAULT 0 CHECK (open_holds >= 0)""",
    """UPDATE buckets AS b SET open_holds = c.n
FROM (SELECT account_id, CASE WHEN allowance_held > 0 THEN 'allowance' ELSE 'purchased' END AS pool,
          CASE WHEN allowance_held > 0 THEN allowance_bucket ELSE purchased_bucket END AS bucket, count(*) AS n
      FROM holds WHERE status = 'open' GROUP BY 1, 2, 3) AS c
WHERE b.account_id = c.account_id AND b.pool = c.pool AND b.bucket = c.bucket""",
    """ALTER TABLE accounts
    ADD COLUMN requests_per_minute bigint CHECK (requests_per_minute > 0),
    ADD COLUMN tokens_per_minute bigint CHECK (tokens_per_minute > 0),
    ADD COLUMN concurrent_holds bigint CHECK (concurrent_holds > 0)
""",
    """DROP FUNCTION meter_reserve_fast""",
    """
CREATE FUNCTION meter_reserve_fast(
    p_account text, p_request text, p_hold uuid, p_model text, p_input bigint, p_max_output bigint,
    p_ttl integer, p_labels jsonb, p_catalog_version text, p_input_weight bigint, p_output_weight bigint,
    p_input_price bigint, p_output_price bigint, p_amount bigint, p_start integer,
    p_clock_offset double precision, p_plans text[], p_requests_per_minute bigint[],
    p_tokens_per_minute bigint[], p_concurrent_holds bigint[])
RETURNS TABLE (outcome text, hold_pool text, hold_bucket smallint, other_bucket smallint,
    period_start timestamptz, period_end timestamptz, expires_at timestamptz, plan_id text,
    allowance_total bigint, debt bigint, allowance_remaining bigint, purchased_remaining bigint,
    allowance_held bigint, purchased_held bigint, used bigint, warned smallint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_account accounts%ROWTYPE;
    v_pool text := 'allowance';
    v_bucket smallint;
    v_first smallint;
    v_window timestamptz := date_trunc('minute', v_now);
    v_index integer;
    v_rpm bigint;
    v_tpm bigint;
    v_holds bigint;
    v_requests bigint;
    v_tokens bigint;
    v_open bigint;
BEGIN
    outcome := 'slow';
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF NOT FOUND OR v_account.period_end <= v_now OR v_account.debt > 0 THEN
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM 1 FROM holds AS h WHERE h.account_id = p_account AND h.request_id = p_request;
    IF FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;
    v_first := p_start % v_account.bucket_count;
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
    -- Allowance first; purchased only when no allowance is left at all.
    FOR attempt IN 1..2 LOOP
        WITH pick AS MATERIALIZED (
            SELECT b.bucket FROM buckets AS b
            WHERE b.account_id = p_account AND b.pool = v_pool AND b.available >= p_amount
            ORDER BY (b.bucket + v_account.bucket_count - v_first) % v_account.bucket_count
            LIMIT 1 FOR UPDATE SKIP LOCKED)
        UPDATE buckets AS b SET available = b.available - p_amount, held = b.held + p_amount,
            open_holds = b.open_holds + 1,
            rate_requests = CASE WHEN b.rate_window = v_window THEN b.rate_requests + 1 ELSE 1 END,
            rate_tokens = CASE WHEN b.rate_window = v_window THEN b.rate_tokens + p_amount
                ELSE p_amount END,
            rate_window = v_window
        FROM pick WHERE b.account_id = p_account AND b.pool = v_pool AND b.bucket = pick.bucket
        RETURNING b.bucket INTO v_bucket;
        EXIT WHEN v_bucket IS NOT NULL OR v_pool = 'purchased';
        PERFORM 1 FROM buckets AS b
        WHERE b.account_id = p_account AND b.pool = 'allowance' AND b.available > 0;
        IF FOUND THEN
            RETURN NEXT;  -- allowance is spread too thin for one bucket: the general path decides
            RETURN;
        END IF;
        v_pool := 'purchased';
    END LOOP;
    IF v_bucket IS NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;
    INSERT INTO holds (account_id, hold_id, request_id, model, input_tokens, max_output_tokens, ttl_seconds,
        labels, catalog_version, input_weight, output_weight, input_price, output_price, allowance_held,
        allowance_bucket, purchased_held, purchased_bucket, period_start, status, created_at, expires_at)
    VALUES (p_account, p_hold, p_request, p_model, p_input, p_max_output, p_ttl, p_labels, p_catalog_version,
        p_input_weight, p_output_weight, p_input_price, p_output_price,
        CASE WHEN v_pool = 'allowance' THEN p_amount ELSE 0 END,
        CASE WHEN v_pool = 'allowance' THEN v_bucket ELSE v_first END,
        CASE WHEN v_pool = 'purchased' THEN p_amount ELSE 0 END,
        CASE WHEN v_pool = 'purchased' THEN v_bucket ELSE v_first END,
        v_account.period_start, 'open', v_now, v_now + make_interval(secs => p_ttl))
    ON CONFLICT ON CONSTRAINT holds_account_id_request_id_key DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'a concurrent Reserve used request_id %', p_request USING ERRCODE = '40001';
    END IF;
    outcome := 'ok';
    hold_pool := v_pool;
    hold_bucket := v_bucket;
    other_bucket := v_first;
    period_start := v_account.period_start;
    period_end := v_account.period_end;
    expires_at := v_now + make_interval(secs => p_ttl);
    plan_id := v_account.plan_id;
    allowance_total := v_account.allowance_total;
    debt := v_account.debt;
    warned := CASE WHEN v_account.warned_period_start = v_account.period_start
        THEN v_account.warned_levels ELSE 0 END;
    SELECT coalesce(sum(b.available) FILTER (WHERE b.pool = 'allowance'), 0),
           coalesce(sum(b.available) FILTER (WHERE b.pool = 'purchased'), 0),
           coalesce(sum(b.held) FILTER (WHERE b.pool = 'allowance'), 0),
           coalesce(sum(b.held) FILTER (WHERE b.pool = 'purchased'), 0),
           coalesce(sum(b.used), 0)
    INTO allowance_remaining, purchased_remaining, allowance_held, purchased_held, used
    FROM buckets AS b WHERE b.account_id = p_account;
    RETURN NEXT;
END;
$$
""",
    """DROP FUNCTION meter_commit_fast""",
    """
CREATE FUNCTION meter_commit_fast(
    p_account text, p_hold uuid, p_input bigint, p_output bigint, p_clock_offset double precision, p_caller text)
RETURNS TABLE (outcome text, charged bigint, cost bigint, late boolean, period_start timestamptz,
    period_end timestamptz, plan_id text, allowance_total bigint, debt bigint, allowance_remaining bigint,
    purchased_remaining bigint, allowance_held bigint, purchased_held bigint, used bigint, warned smallint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_hold holds%ROWTYPE;
    v_account accounts%ROWTYPE;
    v_charge bigint;
    v_used_allowance bigint;
    v_used_purchased bigint;
    v_cost bigint;
    v_late boolean;
    v_reservation text := p_account || '/' || replace(p_hold::text, '-', '');
BEGIN
    outcome := 'slow';
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    IF NOT FOUND OR v_hold.status <> 'open' THEN
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF v_account.period_end <= v_now OR v_account.period_start <> v_hold.period_start OR v_account.debt > 0 THEN
        RETURN NEXT;
        RETURN;
    END IF;
    v_charge := (p_input * v_hold.input_weight + p_output * v_hold.output_weight + 999999) / 1000000;
    IF v_charge > v_hold.allowance_held + v_hold.purchased_held THEN
        RETURN NEXT;
        RETURN;
    END IF;
    v_used_allowance := least(v_charge, v_hold.allowance_held);
    v_used_purchased := least(v_charge - v_used_allowance, v_hold.purchased_held);
    -- What locks nothing another call waits on comes first; the balance row (which Reserves of
    -- the account look for) is locked last, so it stays locked for as short a time as possible.
    INSERT INTO ledger_entries (account_id, created_at, kind, pool, amount, reservation_id, caller)
    SELECT p_account, v_now, 'usage', v.pool, v.amount, v_reservation, p_caller
    FROM (VALUES (1, 'allowance', -v_used_allowance), (2, 'purchased', -v_used_purchased)) AS v(n, pool, amount)
    WHERE v.amount <> 0 ORDER BY v.n;
    v_cost := (p_input * v_hold.input_price + p_output * v_hold.output_price + 999999) / 1000000;
    v_late := v_now >= v_hold.expires_at;
    UPDATE holds AS h SET status = 'committed', settled_at = v_now, usage_input_tokens = p_input,
        usage_output_tokens = p_output, charged_tokens = v_charge, cost_micros = v_cost, unbilled_tokens = 0,
        late = v_late
    WHERE h.account_id = p_account AND h.hold_id = p_hold;
    IF v_hold.allowance_held > 0 THEN
        UPDATE buckets AS b SET available = b.available + v_hold.allowance_held - v_used_allowance,
            held = b.held - v_hold.allowance_held, used = b.used + v_used_allowance,
            open_holds = b.open_holds - 1
        WHERE b.account_id = p_account AND b.pool = 'allowance' AND b.bucket = v_hold.allowance_bucket;
    END IF;
    IF v_hold.purchased_held > 0 THEN
        UPDATE buckets AS b SET available = b.available + v_hold.purchased_held - v_used_purchased,
            held = b.held - v_hold.purchased_held, used = b.used + v_used_purchased,
            open_holds = b.open_holds - CASE WHEN v_hold.allowance_held > 0 THEN 0 ELSE 1 END
        WHERE b.account_id = p_account AND b.pool = 'purchased' AND b.bucket = v_hold.purchased_bucket;
    END IF;
    -- On the totals row of the balance row updated above (still locked): no new lock to wait on.
    INSERT INTO usage_daily AS u (account_id, day, model, pool, bucket, requests, input_tokens, output_tokens,
        charged_tokens, cost_micros, unbilled_tokens)
    VALUES (p_account, (v_now AT TIME ZONE 'UTC')::date, v_hold.model,
        CASE WHEN v_hold.allowance_held > 0 THEN 'allowance' ELSE 'purchased' END,
        CASE WHEN v_hold.allowance_held > 0 THEN v_hold.allowance_bucket ELSE v_hold.purchased_bucket END,
        1, p_input, p_output, v_charge, v_cost, 0)
    ON CONFLICT (account_id, day, model, pool, bucket) DO UPDATE SET requests = u.requests + 1,
        input_tokens = u.input_tokens + excluded.input_tokens,
        output_tokens = u.output_tokens + excluded.output_tokens,
        charged_tokens = u.charged_tokens + excluded.charged_tokens,
        cost_micros = u.cost_micros + excluded.cost_micros;
    outcome := 'ok';
    charged := v_charge;
    cost := v_cost;
    late := v_late;
    period_start := v_account.period_start;
    period_end := v_account.period_end;
    plan_id := v_account.plan_id;
    allowance_total := v_account.allowance_total;
    debt := v_account.debt;
    warned := CASE WHEN v_account.warned_period_start = v_account.period_start
        THEN v_account.warned_levels ELSE 0 END;
    SELECT coalesce(sum(b.available) FILTER (WHERE b.pool = 'allowance'), 0),
           coalesce(sum(b.available) FILTER (WHERE b.pool = 'purchased'), 0),
           coalesce(sum(b.held) FILTER (WHERE b.pool = 'allowance'), 0),
           coalesce(sum(b.held) FILTER (WHERE b.pool = 'purchased'), 0),
           coalesce(sum(b.used), 0)
    INTO allowance_remaining, purchased_remaining, allowance_held, purchased_held, used
    FROM buckets AS b WHERE b.account_id = p_account;
    RETURN NEXT;
END;
$$
""",
)

DOWNGRADE = (
    """DROP FUNCTION meter_commit_fast""",
    """
CREATE FUNCTION meter_commit_fast(
    p_account text, p_hold uuid, p_input bigint, p_output bigint, p_clock_offset double precision, p_caller text)
RETURNS TABLE (outcome text, charged bigint, cost bigint, late boolean, period_start timestamptz,
    period_end timestamptz, plan_id text, allowance_total bigint, debt bigint, allowance_remaining bigint,
    purchased_remaining bigint, allowance_held bigint, purchased_held bigint, used bigint, warned smallint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_hold holds%ROWTYPE;
    v_account accounts%ROWTYPE;
    v_charge bigint;
    v_used_allowance bigint;
    v_used_purchased bigint;
    v_cost bigint;
    v_late boolean;
    v_reservation text := p_account || '/' || replace(p_hold::text, '-', '');
BEGIN
    outcome := 'slow';
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    IF NOT FOUND OR v_hold.status <> 'open' THEN
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF v_account.period_end <= v_now OR v_account.period_start <> v_hold.period_start OR v_account.debt > 0 THEN
        RETURN NEXT;
        RETURN;
    END IF;
    v_charge := (p_input * v_hold.input_weight + p_output * v_hold.output_weight + 999999) / 1000000;
    IF v_charge > v_hold.allowance_held + v_hold.purchased_held THEN
        RETURN NEXT;
        RETURN;
    END IF;
    v_used_allowance := least(v_charge, v_hold.allowance_held);
    v_used_purchased := least(v_charge - v_used_allowance, v_hold.purchased_held);
    -- What locks nothing another call waits on comes first; the balance row (which Reserves of
    -- the account look for) is locked last, so it stays locked for as short a time as possible.
    INSERT INTO ledger_entries (account_id, created_at, kind, pool, amount, reservation_id, caller)
    SELECT p_account, v_now, 'usage', v.pool, v.amount, v_reservation, p_caller
    FROM (VALUES (1, 'allowance', -v_used_allowance), (2, 'purchased', -v_used_purchased)) AS v(n, pool, amount)
    WHERE v.amount <> 0 ORDER BY v.n;
    v_cost := (p_input * v_hold.input_price + p_output * v_hold.output_price + 999999) / 1000000;
    v_late := v_now >= v_hold.expires_at;
    UPDATE holds AS h SET status = 'committed', settled_at = v_now, usage_input_tokens = p_input,
        usage_output_tokens = p_output, charged_tokens = v_charge, cost_micros = v_cost, unbilled_tokens = 0,
        late = v_late
    WHERE h.account_id = p_account AND h.hold_id = p_hold;
    IF v_hold.allowance_held > 0 THEN
        UPDATE buckets AS b SET available = b.available + v_hold.allowance_held - v_used_allowance,
            held = b.held - v_hold.allowance_held, used = b.used + v_used_allowance
        WHERE b.account_id = p_account AND b.pool = 'allowance' AND b.bucket = v_hold.allowance_bucket;
    END IF;
    IF v_hold.purchased_held > 0 THEN
        UPDATE buckets AS b SET available = b.available + v_hold.purchased_held - v_used_purchased,
            held = b.held - v_hold.purchased_held, used = b.used + v_used_purchased
        WHERE b.account_id = p_account AND b.pool = 'purchased' AND b.bucket = v_hold.purchased_bucket;
    END IF;
    -- On the totals row of the balance row updated above (still locked): no new lock to wait on.
    INSERT INTO usage_daily AS u (account_id, day, model, pool, bucket, requests, input_tokens, output_tokens,
        charged_tokens, cost_micros, unbilled_tokens)
    VALUES (p_account, (v_now AT TIME ZONE 'UTC')::date, v_hold.model,
        CASE WHEN v_hold.allowance_held > 0 THEN 'allowance' ELSE 'purchased' END,
        CASE WHEN v_hold.allowance_held > 0 THEN v_hold.allowance_bucket ELSE v_hold.purchased_bucket END,
        1, p_input, p_output, v_charge, v_cost, 0)
    ON CONFLICT (account_id, day, model, pool, bucket) DO UPDATE SET requests = u.requests + 1,
        input_tokens = u.input_tokens + excluded.input_tokens,
        output_tokens = u.output_tokens + excluded.output_tokens,
        charged_tokens = u.charged_tokens + excluded.charged_tokens,
        cost_micros = u.cost_micros + excluded.cost_micros;
    outcome := 'ok';
    charged := v_charge;
    cost := v_cost;
    late := v_late;
    period_start := v_account.period_start;
    period_end := v_account.period_end;
    plan_id := v_account.plan_id;
    allowance_total := v_account.allowance_total;
    debt := v_account.debt;
    warned := CASE WHEN v_account.warned_period_start = v_account.period_start
        THEN v_account.warned_levels ELSE 0 END;
    SELECT coalesce(sum(b.available) FILTER (WHERE b.pool = 'allowance'), 0),
           coalesce(sum(b.available) FILTER (WHERE b.pool = 'purchased'), 0),
           coalesce(sum(b.held) FILTER (WHERE b.pool = 'allowance'), 0),
           coalesce(sum(b.held) FILTER (WHERE b.pool = 'purchased'), 0),
           coalesce(sum(b.used), 0)
    INTO allowance_remaining, purchased_remaining, allowance_held, purchased_held, used
    FROM buckets AS b WHERE b.account_id = p_account;
    RETURN NEXT;
END;
$$
""",
    """DROP FUNCTION meter_reserve_fast""",
    """
CREATE FUNCTION meter_reserve_fast(
    p_account text, p_request text, p_hold uuid, p_model text, p_input bigint, p_max_output bigint,
    p_ttl integer, p_labels jsonb, p_catalog_version text, p_input_weight bigint, p_output_weight bigint,
    p_input_price bigint, p_output_price bigint, p_amount bigint, p_start integer,
    p_clock_offset double precision)
RETURNS TABLE (outcome text, hold_pool text, hold_bucket smallint, other_bucket smallint,
    period_start timestamptz, period_end timestamptz, expires_at timestamptz, plan_id text,
    allowance_total bigint, debt bigint, allowance_remaining bigint, purchased_remaining bigint,
    allowance_held bigint, purchased_held bigint, used bigint, warned smallint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_account accounts%ROWTYPE;
    v_pool text := 'allowance';
    v_bucket smallint;
    v_first smallint;
BEGIN
    outcome := 'slow';
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF NOT FOUND OR v_account.period_end <= v_now OR v_account.debt > 0 THEN
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM 1 FROM holds AS h WHERE h.account_id = p_account AND h.request_id = p_request;
    IF FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;
    v_first := p_start % v_account.bucket_count;
    -- Allowance first; purchased only when no allowance is left at all.
    FOR attempt IN 1..2 LOOP
        WITH pick AS MATERIALIZED (
            SELECT b.bucket FROM buckets AS b
            WHERE b.account_id = p_account AND b.pool = v_pool AND b.available >= p_amount
            ORDER BY (b.bucket + v_account.bucket_count - v_first) % v_account.bucket_count
            LIMIT 1 FOR UPDATE SKIP LOCKED)
        UPDATE buckets AS b SET available = b.available - p_amount, held = b.held + p_amount
        FROM pick WHERE b.account_id = p_account AND b.pool = v_pool AND b.bucket = pick.bucket
        RETURNING b.bucket INTO v_bucket;
        EXIT WHEN v_bucket IS NOT NULL OR v_pool = 'purchased';
        PERFORM 1 FROM buckets AS b
        WHERE b.account_id = p_account AND b.pool = 'allowance' AND b.available > 0;
        IF FOUND THEN
            RETURN NEXT;  -- allowance is spread too thin for one bucket: the general path decides
            RETURN;
        END IF;
        v_pool := 'purchased';
    END LOOP;
    IF v_bucket IS NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;
    INSERT INTO holds (account_id, hold_id, request_id, model, input_tokens, max_output_tokens, ttl_seconds,
        labels, catalog_version, input_weight, output_weight, input_price, output_price, allowance_held,
        allowance_bucket, purchased_held, purchased_bucket, period_start, status, created_at, expires_at)
    VALUES (p_account, p_hold, p_request, p_model, p_input, p_max_output, p_ttl, p_labels, p_catalog_version,
        p_input_weight, p_output_weight, p_input_price, p_output_price,
        CASE WHEN v_pool = 'allowance' THEN p_amount ELSE 0 END,
        CASE WHEN v_pool = 'allowance' THEN v_bucket ELSE v_first END,
        CASE WHEN v_pool = 'purchased' THEN p_amount ELSE 0 END,
        CASE WHEN v_pool = 'purchased' THEN v_bucket ELSE v_first END,
        v_account.period_start, 'open', v_now, v_now + make_interval(secs => p_ttl))
    ON CONFLICT ON CONSTRAINT holds_account_id_request_id_key DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'a concurrent Reserve used request_id %', p_request USING ERRCODE = '40001';
    END IF;
    outcome := 'ok';
    hold_pool := v_pool;
    hold_bucket := v_bucket;
    other_bucket := v_first;
    period_start := v_account.period_start;
    period_end := v_account.period_end;
    expires_at := v_now + make_interval(secs => p_ttl);
    plan_id := v_account.plan_id;
    allowance_total := v_account.allowance_total;
    debt := v_account.debt;
    warned := CASE WHEN v_account.warned_period_start = v_account.period_start
        THEN v_account.warned_levels ELSE 0 END;
    SELECT coalesce(sum(b.available) FILTER (WHERE b.pool = 'allowance'), 0),
           coalesce(sum(b.available) FILTER (WHERE b.pool = 'purchased'), 0),
           coalesce(sum(b.held) FILTER (WHERE b.pool = 'allowance'), 0),
           coalesce(sum(b.held) FILTER (WHERE b.pool = 'purchased'), 0),
           coalesce(sum(b.used), 0)
    INTO allowance_remaining, purchased_remaining, allowance_held, purchased_held, used
    FROM buckets AS b WHERE b.account_id = p_account;
    RETURN NEXT;
END;
$$
""",
    "ALTER TABLE accounts DROP COLUMN requests_per_minute, DROP COLUMN tokens_per_minute, DROP COLUMN concurrent_holds",
    "ALTER TABLE buckets DROP COLUMN rate_window, DROP COLUMN rate_requests, DROP COLUMN rate_tokens, "
    "DROP COLUMN open_holds",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
