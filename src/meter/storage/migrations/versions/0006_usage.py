"""Usage by day and model, and which balance warnings an account was already told about.

usage_daily: one row per account, UTC day, model and balance row (pool, bucket), added to by
every Commit in the same transaction as its charge. The row is the one of the balance row the
Commit already holds locked (the hold's bucket), so the aggregate adds no lock a Commit could
wait on: concurrent Commits of one busy account meet on a totals row only when they meet on
its balance row anyway. GetUsage sums the buckets; its cost depends on the
days and models asked for, never on how many calls the account made. Rows are derived data:
`meter audit` checks them against the committed holds (each committed hold is the usage record
of its call: model, tokens, charge, cost at the pinned catalog version, labels, late, unbilled).
Existing committed holds are summed into it here.

accounts.warned_levels / warned_period_start: the warning levels already announced in the period
that starts at warned_period_start, as bits (1: 80 %, 2: 90 %, 4: 95 %, 8: exhausted); a new
period starts from none without anything being reset.

The fast-path functions are replaced: meter_commit_fast adds to usage_daily, and both return the
announced levels so the service can tell a new crossing without another round trip; Commit now
locks its balance row last, after the writes no other call waits on, so a busy account's
Reserves find it locked for as short a time as possible.

Every statement is frozen here in full, as it ran when this migration was written: no
migration imports or edits another's text.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UPGRADE = (
    """
CREATE TABLE usage_daily (
    account_id      text NOT NULL,
    day             date NOT NULL,
    model           text NOT NULL,
    pool            text NOT NULL CHECK (pool IN ('allowance', 'purchased')),
    bucket          smallint NOT NULL,
    requests        bigint NOT NULL CHECK (requests > 0),
    input_tokens    bigint NOT NULL CHECK (input_tokens >= 0),
    output_tokens   bigint NOT NULL CHECK (output_tokens >= 0),
    charged_tokens  bigint NOT NULL CHECK (charged_tokens >= 0),
    cost_micros     bigint NOT NULL CHECK (cost_micros >= 0),
    unbilled_tokens bigint NOT NULL CHECK (unbilled_tokens >= 0),
    PRIMARY KEY (account_id, day, model, pool, bucket)
)""",
    """INSERT INTO usage_daily (account_id, day, model, pool, bucket, requests, input_tokens, output_tokens,
    charged_tokens, cost_micros, unbilled_tokens)
SELECT account_id, (settled_at AT TIME ZONE 'UTC')::date, model,
    CASE WHEN allowance_held > 0 THEN 'allowance' ELSE 'purchased' END,
    CASE WHEN allowance_held > 0 THEN allowance_bucket ELSE purchased_bucket END, count(*),
    sum(usage_input_tokens), sum(usage_output_tokens), sum(charged_tokens), sum(cost_micros),
    sum(unbilled_tokens)
FROM holds WHERE status = 'committed'
GROUP BY 1, 2, 3, 4, 5""",
    """CREATE VIEW usage_records AS
SELECT account_id, account_id || '/' || replace(hold_id::text, '-', '') AS reservation_id, request_id,
    settled_at AS committed_at, model, catalog_version, usage_input_tokens AS input_tokens,
    usage_output_tokens AS output_tokens, charged_tokens, cost_micros, unbilled_tokens, late, labels
FROM holds WHERE status = 'committed'""",
    """ALTER TABLE accounts
    ADD COLUMN warned_levels smallint NOT NULL DEFAULT 0 CHECK (warned_levels BETWEEN 0 AND 15),
    ADD COLUMN warned_period_start timestamptz;
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
    """DROP FUNCTION meter_commit_fast""",
    """
CREATE FUNCTION meter_commit_fast(
    p_account text, p_hold uuid, p_input bigint, p_output bigint, p_clock_offset double precision)
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
    INSERT INTO ledger_entries (account_id, created_at, kind, pool, amount, reservation_id)
    SELECT p_account, v_now, 'usage', v.pool, v.amount, v_reservation
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
)

DOWNGRADE = (
    """DROP FUNCTION meter_commit_fast""",
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
    allowance_held bigint, purchased_held bigint, used bigint)
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
    """
CREATE FUNCTION meter_commit_fast(
    p_account text, p_hold uuid, p_input bigint, p_output bigint, p_clock_offset double precision)
RETURNS TABLE (outcome text, charged bigint, cost bigint, late boolean, period_start timestamptz,
    period_end timestamptz, plan_id text, allowance_total bigint, debt bigint, allowance_remaining bigint,
    purchased_remaining bigint, allowance_held bigint, purchased_held bigint, used bigint)
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
    INSERT INTO ledger_entries (account_id, created_at, kind, pool, amount, reservation_id)
    SELECT p_account, v_now, 'usage', v.pool, v.amount, v_reservation
    FROM (VALUES (1, 'allowance', -v_used_allowance), (2, 'purchased', -v_used_purchased)) AS v(n, pool, amount)
    WHERE v.amount <> 0 ORDER BY v.n;
    v_cost := (p_input * v_hold.input_price + p_output * v_hold.output_price + 999999) / 1000000;
    v_late := v_now >= v_hold.expires_at;
    UPDATE holds AS h SET status = 'committed', settled_at = v_now, usage_input_tokens = p_input,
        usage_output_tokens = p_output, charged_tokens = v_charge, cost_micros = v_cost, unbilled_tokens = 0,
        late = v_late
    WHERE h.account_id = p_account AND h.hold_id = p_hold;
    outcome := 'ok';
    charged := v_charge;
    cost := v_cost;
    late := v_late;
    period_start := v_account.period_start;
    period_end := v_account.period_end;
    plan_id := v_account.plan_id;
    allowance_total := v_account.allowance_total;
    debt := v_account.debt;
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
    """ALTER TABLE accounts DROP COLUMN warned_levels, DROP COLUMN warned_period_start""",
    """DROP VIEW usage_records""",
    """DROP TABLE usage_daily""",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
