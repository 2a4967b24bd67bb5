"""Every Reserve, Commit, Release, ExtendReservation and expiry decided in the database, for every
case: replays, debt, spreading over rows, rate limits and refusals are outcomes of one function
each (meter_reserve, meter_commit, meter_release, meter_extend, meter_expire), built from small
functions with one job each. They replace meter_reserve_fast and meter_commit_fast, which handed
every case but the common one to a second implementation in Python.

The functions are frozen copies of src/meter/storage/sql/*.sql as they are at this revision
(tests/integration/test_sql_files.py checks the database runs the files' text).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# In the order they can be created (plain SQL functions are checked against those they call).
METER_WEIGHTED_TOKENS = """CREATE OR REPLACE FUNCTION meter_weighted_tokens(
    p_input bigint, p_output bigint, p_input_weight bigint, p_output_weight bigint
) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_input * p_input_weight + p_output * p_output_weight + 999999) / 1000000
$$"""

METER_COST_MICROS = """CREATE OR REPLACE FUNCTION meter_cost_micros(
    p_input bigint, p_output bigint, p_input_price bigint, p_output_price bigint
) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_input * p_input_price + p_output * p_output_price + 999999) / 1000000
$$"""

METER_BALANCE = """CREATE OR REPLACE FUNCTION meter_balance(p_account text)
RETURNS TABLE (
    plan_id text, period_start timestamptz, period_end timestamptz, allowance_total bigint,
    debt bigint, warned smallint, allowance_remaining bigint, purchased_remaining bigint,
    allowance_held bigint, purchased_held bigint, used bigint
)
LANGUAGE sql STABLE AS $$
    SELECT a.plan_id, a.period_start, a.period_end, a.allowance_total, a.debt,
        CASE WHEN a.warned_period_start = a.period_start THEN a.warned_levels ELSE 0 END::smallint,
        coalesce(sum(b.available) FILTER (WHERE b.pool = 'allowance'), 0)::bigint,
        coalesce(sum(b.available) FILTER (WHERE b.pool = 'purchased'), 0)::bigint,
        coalesce(sum(b.held) FILTER (WHERE b.pool = 'allowance'), 0)::bigint,
        coalesce(sum(b.held) FILTER (WHERE b.pool = 'purchased'), 0)::bigint,
        coalesce(sum(b.used), 0)::bigint
    FROM accounts AS a LEFT JOIN buckets AS b ON b.account_id = a.account_id
    WHERE a.account_id = p_account
    GROUP BY a.account_id
$$"""

METER_LOCK_BUCKETS = """CREATE OR REPLACE FUNCTION meter_lock_buckets(p_account text) RETURNS void LANGUAGE sql AS $$
    SELECT NULL FROM buckets AS b WHERE b.account_id = p_account ORDER BY b.pool, b.bucket FOR UPDATE
$$"""

METER_SPREAD = """CREATE OR REPLACE FUNCTION meter_spread(p_account text, p_pool text, p_available bigint)
RETURNS void LANGUAGE sql AS $$
    WITH n AS (
        SELECT count(*) AS rows FROM buckets AS b WHERE b.account_id = p_account AND b.pool = p_pool
    )
    UPDATE buckets AS b SET available = p_available / n.rows
        + CASE WHEN b.bucket < p_available % n.rows THEN 1 ELSE 0 END
    FROM n WHERE b.account_id = p_account AND b.pool = p_pool
$$"""

METER_TAKE = """CREATE OR REPLACE FUNCTION meter_take(
    p_account text, p_amount bigint,
    OUT from_allowance bigint, OUT from_purchased bigint, OUT shortfall bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_allowance bigint;
    v_purchased bigint;
BEGIN
    SELECT coalesce(sum(b.available) FILTER (WHERE b.pool = 'allowance'), 0),
        coalesce(sum(b.available) FILTER (WHERE b.pool = 'purchased'), 0)
    INTO v_allowance, v_purchased
    FROM buckets AS b WHERE b.account_id = p_account;
    from_allowance := least(p_amount, v_allowance);
    from_purchased := least(p_amount - from_allowance, v_purchased);
    shortfall := p_amount - from_allowance - from_purchased;
    PERFORM meter_spread(p_account, 'allowance', v_allowance - from_allowance);
    PERFORM meter_spread(p_account, 'purchased', v_purchased - from_purchased);
END;
$$"""

METER_PAY_DEBT = """CREATE OR REPLACE FUNCTION meter_pay_debt(
    p_account text, p_allowance bigint, p_purchased bigint, p_ref text, p_reservation text,
    p_now timestamptz, p_caller text,
    OUT allowance_left bigint, OUT purchased_left bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_debt bigint;
    v_from_allowance bigint;
    v_from_purchased bigint;
BEGIN
    SELECT a.debt INTO v_debt FROM accounts AS a WHERE a.account_id = p_account;
    v_from_allowance := least(v_debt, p_allowance);
    v_from_purchased := least(v_debt - v_from_allowance, p_purchased);
    allowance_left := p_allowance - v_from_allowance;
    purchased_left := p_purchased - v_from_purchased;
    IF v_from_allowance + v_from_purchased = 0 THEN
        RETURN;
    END IF;
    UPDATE accounts AS a SET debt = a.debt - v_from_allowance - v_from_purchased, updated_at = p_now
    WHERE a.account_id = p_account;
    INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, reservation_id, ref)
    SELECT p_account, p_now, p_caller, 'debt_payment', v.pool, v.amount, p_reservation, p_ref
    FROM (VALUES (1, 'allowance', -v_from_allowance), (2, 'purchased', -v_from_purchased),
        (3, 'debt', v_from_allowance + v_from_purchased)) AS v (n, pool, amount)
    WHERE v.amount <> 0 ORDER BY v.n;
END;
$$"""

METER_SETTLE = """CREATE OR REPLACE FUNCTION meter_settle(
    p_hold holds, p_charge bigint, p_status text, p_period_start timestamptz, p_reservation text,
    p_now timestamptz, p_caller text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_parked boolean := p_hold.status = 'open';  -- its tokens still sit on its rows as held
    v_held_allowance bigint := CASE WHEN v_parked THEN p_hold.allowance_held ELSE 0 END;
    v_held_purchased bigint := CASE WHEN v_parked THEN p_hold.purchased_held ELSE 0 END;
    v_used_allowance bigint := least(p_charge, v_held_allowance);
    v_used_purchased bigint := least(p_charge - v_used_allowance, v_held_purchased);
    v_over bigint := p_charge - v_used_allowance - v_used_purchased;
    v_expired bigint := 0;
    v_back_allowance bigint := v_held_allowance - v_used_allowance;
    v_back_purchased bigint := v_held_purchased - v_used_purchased;
    v_from_allowance bigint := 0;
    v_from_purchased bigint := 0;
    v_shortfall bigint := 0;
    v_debt bigint;
BEGIN
    IF p_hold.period_start <> p_period_start THEN
        v_expired := v_back_allowance;  -- the period it was taken in has ended
        v_back_allowance := 0;
    END IF;
    SELECT a.debt INTO v_debt FROM accounts AS a WHERE a.account_id = p_hold.account_id;
    IF v_over > 0 OR (v_debt > 0 AND v_back_allowance + v_back_purchased > 0) THEN
        PERFORM 1 FROM accounts AS a WHERE a.account_id = p_hold.account_id FOR UPDATE;  -- lock order
    END IF;
    IF v_over > 0 THEN
        PERFORM meter_lock_buckets(p_hold.account_id);
        SELECT t.from_allowance, t.from_purchased, t.shortfall INTO v_from_allowance, v_from_purchased, v_shortfall
        FROM meter_take(p_hold.account_id, v_over) AS t;
        IF v_shortfall > 0 THEN
            UPDATE accounts AS a SET debt = a.debt + v_shortfall, updated_at = p_now
            WHERE a.account_id = p_hold.account_id;
        END IF;
    ELSIF v_debt > 0 THEN
        SELECT d.allowance_left, d.purchased_left INTO v_back_allowance, v_back_purchased
        FROM meter_pay_debt(p_hold.account_id, v_back_allowance, v_back_purchased, NULL, p_reservation, p_now,
            p_caller) AS d;
    END IF;
    INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, reservation_id)
    SELECT p_hold.account_id, p_now, p_caller, v.kind, v.pool, v.amount, p_reservation
    FROM (VALUES (1, 'usage', 'allowance', -(v_used_allowance + v_from_allowance)),
        (2, 'usage', 'purchased', -(v_used_purchased + v_from_purchased)),
        (3, 'usage', 'debt', -v_shortfall),
        (4, 'expiry', 'allowance', -v_expired)) AS v (n, kind, pool, amount)
    WHERE v.amount <> 0 ORDER BY v.n;
    -- The hold's own rows last: a Reserve of the account may be waiting for one.
    IF v_held_allowance > 0 OR v_over > 0 THEN
        UPDATE buckets AS b SET available = b.available + v_back_allowance, held = b.held - v_held_allowance,
            used = b.used + v_used_allowance + v_over,
            open_holds = b.open_holds - CASE WHEN v_held_allowance > 0 THEN 1 ELSE 0 END
        WHERE b.account_id = p_hold.account_id AND b.pool = 'allowance' AND b.bucket = p_hold.allowance_bucket;
    END IF;
    IF v_held_purchased > 0 THEN
        UPDATE buckets AS b SET available = b.available + v_back_purchased, held = b.held - v_held_purchased,
            used = b.used + v_used_purchased,
            open_holds = b.open_holds - CASE WHEN v_held_allowance > 0 THEN 0 ELSE 1 END
        WHERE b.account_id = p_hold.account_id AND b.pool = 'purchased' AND b.bucket = p_hold.purchased_bucket;
    END IF;
    UPDATE holds AS h SET status = p_status, settled_at = p_now, usage_input_tokens = p_hold.usage_input_tokens,
        usage_output_tokens = p_hold.usage_output_tokens, charged_tokens = p_hold.charged_tokens,
        cost_micros = p_hold.cost_micros, unbilled_tokens = CASE WHEN p_status = 'committed' THEN v_shortfall END,
        late = p_hold.late
    WHERE h.account_id = p_hold.account_id AND h.hold_id = p_hold.hold_id;
    RETURN v_shortfall;
END;
$$"""

METER_COUNT_USAGE = """CREATE OR REPLACE FUNCTION meter_count_usage(p_hold holds, p_now timestamptz)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO usage_daily AS u (account_id, day, model, pool, bucket, requests, input_tokens, output_tokens,
        charged_tokens, cost_micros, unbilled_tokens)
    VALUES (p_hold.account_id, (p_now AT TIME ZONE 'UTC')::date, p_hold.model,
        CASE WHEN p_hold.allowance_held > 0 THEN 'allowance' ELSE 'purchased' END,
        CASE WHEN p_hold.allowance_held > 0 THEN p_hold.allowance_bucket ELSE p_hold.purchased_bucket END,
        1, p_hold.usage_input_tokens, p_hold.usage_output_tokens, p_hold.charged_tokens, p_hold.cost_micros,
        p_hold.unbilled_tokens)
    ON CONFLICT (account_id, day, model, pool, bucket) DO UPDATE SET requests = u.requests + 1,
        input_tokens = u.input_tokens + excluded.input_tokens,
        output_tokens = u.output_tokens + excluded.output_tokens,
        charged_tokens = u.charged_tokens + excluded.charged_tokens,
        cost_micros = u.cost_micros + excluded.cost_micros,
        unbilled_tokens = u.unbilled_tokens + excluded.unbilled_tokens
$$"""

METER_COMMIT = """CREATE OR REPLACE FUNCTION meter_commit(
    p_account text, p_hold uuid, p_reservation text, p_input bigint, p_output bigint,
    p_clock_offset double precision, p_caller text
)
RETURNS TABLE (
    outcome text, reused_field text, charged bigint, cost bigint, unbilled bigint, late boolean,
    plan_id text, period_start timestamptz, period_end timestamptz, allowance_total bigint, debt bigint,
    warned smallint, allowance_remaining bigint, purchased_remaining bigint, allowance_held bigint,
    purchased_held bigint, used bigint
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_hold holds%ROWTYPE;
    v_account accounts%ROWTYPE;
BEGIN
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'not_found';
    ELSIF v_hold.status = 'committed' THEN
        outcome := 'replayed';
        IF v_hold.usage_input_tokens <> p_input THEN
            outcome := 'usage_reused';
            reused_field := 'input_tokens';
        ELSIF v_hold.usage_output_tokens <> p_output THEN
            outcome := 'usage_reused';
            reused_field := 'output_tokens';
        END IF;
    ELSIF v_hold.status = 'released' THEN
        outcome := 'released';
    ELSE
        SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
        IF v_account.period_end <= v_now THEN
            outcome := 'period_ended';
        ELSE
            outcome := 'committed';
            v_hold.charged_tokens := meter_weighted_tokens(p_input, p_output, v_hold.input_weight,
                v_hold.output_weight);
            v_hold.cost_micros := meter_cost_micros(p_input, p_output, v_hold.input_price, v_hold.output_price);
            v_hold.late := v_hold.status = 'expired' OR v_now >= v_hold.expires_at;
            v_hold.usage_input_tokens := p_input;
            v_hold.usage_output_tokens := p_output;
            v_hold.unbilled_tokens := meter_settle(v_hold, v_hold.charged_tokens, 'committed',
                v_account.period_start, p_reservation, v_now, p_caller);
            PERFORM meter_count_usage(v_hold, v_now);
        END IF;
    END IF;
    IF outcome IN ('committed', 'replayed') THEN
        charged := v_hold.charged_tokens;
        cost := v_hold.cost_micros;
        unbilled := v_hold.unbilled_tokens;
        late := v_hold.late;
    END IF;
    RETURN QUERY SELECT outcome, reused_field, charged, cost, unbilled, late, b.*
        FROM meter_balance(p_account) AS b;
    IF NOT FOUND THEN
        RETURN NEXT;  -- no such account: no balance to show
    END IF;
END;
$$"""

METER_RELEASE = """CREATE OR REPLACE FUNCTION meter_release(
    p_account text, p_hold uuid, p_reservation text, p_clock_offset double precision, p_caller text
)
RETURNS TABLE (
    outcome text, plan_id text, period_start timestamptz, period_end timestamptz, allowance_total bigint,
    debt bigint, warned smallint, allowance_remaining bigint, purchased_remaining bigint, allowance_held bigint,
    purchased_held bigint, used bigint
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_hold holds%ROWTYPE;
    v_account accounts%ROWTYPE;
BEGIN
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF v_hold.hold_id IS NULL THEN
        outcome := 'not_found';
    ELSIF v_hold.status = 'committed' THEN
        outcome := 'committed';
    ELSIF v_account.period_end <= v_now THEN
        outcome := 'period_ended';
    ELSE
        outcome := 'released';
        IF v_hold.status = 'open' THEN
            PERFORM meter_settle(v_hold, 0, 'released', v_account.period_start, p_reservation, v_now, p_caller);
        ELSIF v_hold.status = 'expired' THEN
            UPDATE holds AS h SET status = 'released', settled_at = v_now
            WHERE h.account_id = p_account AND h.hold_id = p_hold;
        END IF;
    END IF;
    RETURN QUERY SELECT outcome, b.* FROM meter_balance(p_account) AS b;
    IF NOT FOUND THEN
        RETURN NEXT;
    END IF;
END;
$$"""

METER_EXPIRE = """CREATE OR REPLACE FUNCTION meter_expire(
    p_account text, p_hold uuid, p_reservation text, p_clock_offset double precision, p_caller text
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_hold holds%ROWTYPE;
    v_account accounts%ROWTYPE;
BEGIN
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    IF NOT FOUND OR v_hold.status <> 'open' OR v_now < v_hold.expires_at THEN
        RETURN 'skipped';
    END IF;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF v_account.period_end <= v_now THEN
        RETURN 'period_ended';
    END IF;
    PERFORM meter_settle(v_hold, 0, 'expired', v_account.period_start, p_reservation, v_now, p_caller);
    RETURN 'expired';
END;
$$"""

METER_EXTEND = """CREATE OR REPLACE FUNCTION meter_extend(
    p_account text, p_hold uuid, p_ttl integer, p_clock_offset double precision,
    OUT outcome text, OUT expires_at timestamptz
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_hold holds%ROWTYPE;
BEGIN
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'not_found';
    ELSIF v_hold.status IN ('committed', 'released') THEN
        outcome := v_hold.status;
    ELSIF v_hold.status = 'expired' OR v_now >= v_hold.expires_at THEN
        outcome := 'expired';
    ELSE
        outcome := 'extended';
        expires_at := v_now + make_interval(secs => p_ttl);
        UPDATE holds AS h SET expires_at = v_now + make_interval(secs => p_ttl)
        WHERE h.account_id = p_account AND h.hold_id = p_hold;
    END IF;
END;
$$"""

METER_HOLD_IN_ONE_BUCKET = """CREATE OR REPLACE FUNCTION meter_hold_in_one_bucket(
    p_account text, p_pool text, p_amount bigint, p_first smallint, p_rows smallint, p_window timestamptz,
    p_wait_ms integer
) RETURNS smallint LANGUAGE plpgsql AS $$
DECLARE
    v_bucket smallint;
    v_wait smallint;
    v_lock_timeout text;
BEGIN
    WITH pick AS MATERIALIZED (
        SELECT b.bucket FROM buckets AS b
        WHERE b.account_id = p_account AND b.pool = p_pool AND b.available >= p_amount
        ORDER BY (b.bucket + p_rows - p_first) % p_rows
        LIMIT 1 FOR UPDATE SKIP LOCKED
    )
    UPDATE buckets AS b SET available = b.available - p_amount, held = b.held + p_amount,
        open_holds = b.open_holds + 1,
        rate_requests = CASE WHEN b.rate_window = p_window THEN b.rate_requests + 1 ELSE 1 END,
        rate_tokens = CASE WHEN b.rate_window = p_window THEN b.rate_tokens + p_amount ELSE p_amount END,
        rate_window = p_window
    FROM pick WHERE b.account_id = p_account AND b.pool = p_pool AND b.bucket = pick.bucket
    RETURNING b.bucket INTO v_bucket;
    IF v_bucket IS NOT NULL OR p_wait_ms <= 0 THEN
        RETURN v_bucket;
    END IF;
    SELECT b.bucket INTO v_wait FROM buckets AS b
    WHERE b.account_id = p_account AND b.pool = p_pool AND b.available >= p_amount
    ORDER BY (b.bucket + p_rows - p_first) % p_rows LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_lock_timeout := current_setting('lock_timeout');
    BEGIN
        PERFORM set_config('lock_timeout', p_wait_ms || 'ms', true);
        UPDATE buckets AS b SET available = b.available - p_amount, held = b.held + p_amount,
            open_holds = b.open_holds + 1,
            rate_requests = CASE WHEN b.rate_window = p_window THEN b.rate_requests + 1 ELSE 1 END,
            rate_tokens = CASE WHEN b.rate_window = p_window THEN b.rate_tokens + p_amount ELSE p_amount END,
            rate_window = p_window
        WHERE b.account_id = p_account AND b.pool = p_pool AND b.bucket = v_wait AND b.available >= p_amount
        RETURNING b.bucket INTO v_bucket;
    EXCEPTION WHEN lock_not_available THEN
        v_bucket := NULL;  -- a queue: the caller takes from all rows instead
    END;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
    RETURN v_bucket;
END;
$$"""

METER_HOLD_ACROSS_BUCKETS = """CREATE OR REPLACE FUNCTION meter_hold_across_buckets(
    p_account text, p_amount bigint, p_first smallint, p_window timestamptz,
    OUT from_allowance bigint, OUT from_purchased bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_taken record;
BEGIN
    PERFORM meter_lock_buckets(p_account);
    IF (SELECT coalesce(sum(b.available), 0) FROM buckets AS b WHERE b.account_id = p_account) < p_amount THEN
        RETURN;
    END IF;
    v_taken := meter_take(p_account, p_amount);
    from_allowance := v_taken.from_allowance;
    from_purchased := v_taken.from_purchased;
    UPDATE buckets AS b SET
        held = b.held + CASE WHEN b.pool = 'allowance' THEN from_allowance ELSE from_purchased END,
        open_holds = b.open_holds + CASE WHEN (b.pool = 'allowance') = (from_allowance > 0) THEN 1 ELSE 0 END,
        rate_requests = CASE WHEN (b.pool = 'allowance') <> (from_allowance > 0) THEN b.rate_requests
            WHEN b.rate_window = p_window THEN b.rate_requests + 1 ELSE 1 END,
        rate_tokens = CASE WHEN (b.pool = 'allowance') <> (from_allowance > 0) THEN b.rate_tokens
            WHEN b.rate_window = p_window THEN b.rate_tokens + p_amount ELSE p_amount END,
        rate_window = CASE WHEN (b.pool = 'allowance') <> (from_allowance > 0) THEN b.rate_window
            ELSE p_window END
    WHERE b.account_id = p_account AND b.bucket = p_first;
END;
$$"""

METER_RATE_REFUSAL = """CREATE OR REPLACE FUNCTION meter_rate_refusal(
    p_account text, p_amount bigint, p_requests_per_minute bigint, p_tokens_per_minute bigint,
    p_concurrent_holds bigint, p_now timestamptz, p_sweep_seconds double precision
)
RETURNS TABLE (limit_name text, limit_value bigint, retry_after double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_window timestamptz := date_trunc('minute', p_now);
    v_minute_left double precision := greatest(0, extract(epoch FROM v_window + interval '1 minute' - p_now));
    v_requests bigint;
    v_tokens bigint;
    v_open bigint;
    v_soonest timestamptz;
BEGIN
    IF p_tokens_per_minute < p_amount THEN
        RETURN QUERY SELECT 'tokensPerMinute', p_tokens_per_minute, NULL::double precision;
        RETURN;
    END IF;
    SELECT coalesce(sum(b.rate_requests) FILTER (WHERE b.rate_window = v_window), 0),
        coalesce(sum(b.rate_tokens) FILTER (WHERE b.rate_window = v_window), 0),
        coalesce(sum(b.open_holds), 0)
    INTO v_requests, v_tokens, v_open
    FROM buckets AS b WHERE b.account_id = p_account;
    IF v_open + 1 > p_concurrent_holds THEN
        SELECT min(h.expires_at) INTO v_soonest FROM holds AS h
        WHERE h.status = 'open' AND h.account_id = p_account;
    END IF;
    -- In this order, so that of limits keeping the Reserve out as long the first is named.
    RETURN QUERY SELECT r.name, r.value, r.wait FROM (VALUES
        (1, 'requestsPerMinute', p_requests_per_minute, v_minute_left, v_requests + 1 > p_requests_per_minute),
        (2, 'tokensPerMinute', p_tokens_per_minute, v_minute_left, v_tokens + p_amount > p_tokens_per_minute),
        (3, 'concurrentHolds', p_concurrent_holds,
            coalesce(greatest(0, extract(epoch FROM v_soonest - p_now)), 0) + p_sweep_seconds,
            v_open + 1 > p_concurrent_holds)
    ) AS r (n, name, value, wait, over)
    WHERE r.over ORDER BY r.wait DESC, r.n LIMIT 1;
END;
$$"""

METER_RESERVE = """CREATE OR REPLACE FUNCTION meter_reserve(
    p_account text, p_request text, p_hold uuid, p_model text, p_input bigint, p_max_output bigint,
    p_ttl integer, p_labels jsonb, p_catalog_version text, p_input_weight bigint, p_output_weight bigint,
    p_input_price bigint, p_output_price bigint, p_start integer, p_clock_offset double precision,
    p_plans text[], p_requests_per_minute bigint[], p_tokens_per_minute bigint[],
    p_concurrent_holds bigint[], p_wait_ms integer, p_sweep_seconds double precision
)
RETURNS TABLE (
    outcome text, hold_id uuid, held bigint, expires_at timestamptz, catalog_version text, status text,
    reused_field text, limit_name text, limit_value bigint, retry_after double precision, required bigint,
    across boolean, plan_id text, period_start timestamptz, period_end timestamptz, allowance_total bigint,
    debt bigint, warned smallint, allowance_remaining bigint, purchased_remaining bigint, allowance_held bigint,
    purchased_held bigint, used bigint
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_window timestamptz := date_trunc('minute', now() + make_interval(secs => p_clock_offset));
    v_account accounts%ROWTYPE;
    v_hold holds%ROWTYPE;
    v_plan integer;
    v_first smallint;
    v_bucket smallint;
    v_allowance bigint := 0;
    v_purchased bigint := 0;
    v_across record;
BEGIN
    required := greatest(1, meter_weighted_tokens(p_input, p_max_output, p_input_weight, p_output_weight));
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF NOT FOUND THEN
        outcome := 'account_not_found';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.request_id = p_request;
    IF FOUND THEN
        outcome := 'replayed';
        reused_field := CASE
            WHEN v_hold.model <> p_model THEN 'model'
            WHEN v_hold.input_tokens <> p_input THEN 'input_tokens'
            WHEN v_hold.max_output_tokens <> p_max_output THEN 'max_output_tokens'
            WHEN v_hold.ttl_seconds <> p_ttl THEN 'ttl_seconds'
            WHEN v_hold.labels <> p_labels THEN 'labels'
        END;
        IF reused_field IS NOT NULL THEN
            outcome := 'request_reused';
        END IF;
    ELSIF v_account.period_end <= v_now THEN
        outcome := 'period_ended';
    ELSIF v_account.debt > 0 THEN
        outcome := 'in_debt';
    ELSE
        v_plan := array_position(p_plans, v_account.plan_id);
        SELECT r.limit_name, r.limit_value, r.retry_after INTO limit_name, limit_value, retry_after
        FROM meter_rate_refusal(p_account, required,
            coalesce(v_account.requests_per_minute, nullif(p_requests_per_minute[v_plan], 0)),
            coalesce(v_account.tokens_per_minute, nullif(p_tokens_per_minute[v_plan], 0)),
            coalesce(v_account.concurrent_holds, nullif(p_concurrent_holds[v_plan], 0)),
            v_now, p_sweep_seconds) AS r;
        IF FOUND THEN
            outcome := 'rate_limited';
        END IF;
    END IF;
    IF outcome IS NULL THEN
        v_first := p_start % v_account.bucket_count;
        v_bucket := meter_hold_in_one_bucket(p_account, 'allowance', required, v_first, v_account.bucket_count,
            v_window, p_wait_ms);
        IF v_bucket IS NOT NULL THEN
            v_allowance := required;
        ELSE
            PERFORM 1 FROM buckets AS b WHERE b.account_id = p_account AND b.pool = 'allowance' AND b.available > 0;
            IF NOT FOUND THEN
                v_bucket := meter_hold_in_one_bucket(p_account, 'purchased', required, v_first,
                    v_account.bucket_count, v_window, p_wait_ms);
                IF v_bucket IS NOT NULL THEN
                    v_purchased := required;
                END IF;
            END IF;
        END IF;
        IF v_bucket IS NULL THEN
            across := true;
            v_across := meter_hold_across_buckets(p_account, required, v_first, v_window);
            IF v_across.from_allowance IS NULL THEN
                outcome := 'insufficient';
            ELSE
                v_allowance := v_across.from_allowance;
                v_purchased := v_across.from_purchased;
                v_bucket := v_first;
            END IF;
        END IF;
    END IF;
    IF outcome IS NULL THEN
        outcome := 'placed';
        INSERT INTO holds AS h (account_id, hold_id, request_id, model, input_tokens, max_output_tokens,
            ttl_seconds, labels, catalog_version, input_weight, output_weight, input_price, output_price,
            allowance_held, allowance_bucket, purchased_held, purchased_bucket, period_start, status, created_at,
            expires_at)
        VALUES (p_account, p_hold, p_request, p_model, p_input, p_max_output, p_ttl, p_labels, p_catalog_version,
            p_input_weight, p_output_weight, p_input_price, p_output_price, v_allowance,
            CASE WHEN v_allowance > 0 THEN v_bucket ELSE v_first END, v_purchased,
            CASE WHEN v_allowance > 0 THEN v_first ELSE v_bucket END, v_account.period_start, 'open', v_now,
            v_now + make_interval(secs => p_ttl))
        ON CONFLICT ON CONSTRAINT holds_account_id_request_id_key DO NOTHING
        RETURNING h.* INTO v_hold;
        IF NOT FOUND THEN
            -- Retried as a whole by the service: the retry finds the concurrent Reserve's hold.
            RAISE EXCEPTION 'a concurrent Reserve used request_id %', p_request USING ERRCODE = '40001';
        END IF;
    END IF;
    IF outcome IN ('placed', 'replayed') THEN
        hold_id := v_hold.hold_id;
        held := v_hold.allowance_held + v_hold.purchased_held;
        expires_at := v_hold.expires_at;
        catalog_version := v_hold.catalog_version;
        status := v_hold.status;
    END IF;
    RETURN QUERY SELECT outcome, hold_id, held, expires_at, catalog_version, status, reused_field, limit_name,
        limit_value, retry_after, required, coalesce(across, false), b.* FROM meter_balance(p_account) AS b;
END;
$$"""

# Downgrade: meter_reserve_fast as migration 0013 left it.
METER_RESERVE_FAST = """CREATE OR REPLACE FUNCTION meter_reserve_fast(
    p_account text, p_request text, p_hold uuid, p_model text, p_input bigint, p_max_output bigint,
    p_ttl integer, p_labels jsonb, p_catalog_version text, p_input_weight bigint, p_output_weight bigint,
    p_input_price bigint, p_output_price bigint, p_amount bigint, p_start integer,
    p_clock_offset double precision, p_plans text[], p_requests_per_minute bigint[],
    p_tokens_per_minute bigint[], p_concurrent_holds bigint[], p_wait_ms integer
)
RETURNS TABLE (
    outcome text, hold_pool text, hold_bucket smallint, other_bucket smallint,
    period_start timestamptz, period_end timestamptz, expires_at timestamptz, plan_id text,
    allowance_total bigint, debt bigint, allowance_remaining bigint, purchased_remaining bigint,
    allowance_held bigint, purchased_held bigint, used bigint, warned smallint
)
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
    v_checked boolean := false;
    v_wait smallint;
    v_lock_timeout text;
    v_allowance_available bigint;
    v_purchased_available bigint;
    v_allowance_held bigint;
    v_purchased_held bigint;
    v_used bigint;
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
               coalesce(sum(b.open_holds), 0),
               coalesce(sum(b.available) FILTER (WHERE b.pool = 'allowance'), 0),
               coalesce(sum(b.available) FILTER (WHERE b.pool = 'purchased'), 0),
               coalesce(sum(b.held) FILTER (WHERE b.pool = 'allowance'), 0),
               coalesce(sum(b.held) FILTER (WHERE b.pool = 'purchased'), 0),
               coalesce(sum(b.used), 0)
        INTO v_requests, v_tokens, v_open, v_allowance_available, v_purchased_available,
            v_allowance_held, v_purchased_held, v_used
        FROM buckets AS b WHERE b.account_id = p_account;
        IF v_requests + 1 > v_rpm OR v_tokens + p_amount > v_tpm OR v_open + 1 > v_holds THEN
            outcome := 'limited';  -- the general path refuses, with the limit and a retry delay
            RETURN NEXT;
            RETURN;
        END IF;
        v_checked := true;
        outcome := 'checked';  -- what gives up from here on was within its limits
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
        IF v_bucket IS NULL AND p_wait_ms > 0 THEN
            -- Every row with the tokens was locked: wait for one (the first in this call's rotation,
            -- as last committed) rather than hand over, which would lock them all for longer.
            SELECT b.bucket INTO v_wait FROM buckets AS b
            WHERE b.account_id = p_account AND b.pool = v_pool AND b.available >= p_amount
            ORDER BY (b.bucket + v_account.bucket_count - v_first) % v_account.bucket_count LIMIT 1;
            IF FOUND THEN
                v_lock_timeout := current_setting('lock_timeout');
                BEGIN
                    PERFORM set_config('lock_timeout', p_wait_ms || 'ms', true);
                    UPDATE buckets AS b SET available = b.available - p_amount, held = b.held + p_amount,
                        open_holds = b.open_holds + 1,
                        rate_requests = CASE WHEN b.rate_window = v_window THEN b.rate_requests + 1 ELSE 1 END,
                        rate_tokens = CASE WHEN b.rate_window = v_window THEN b.rate_tokens + p_amount
                            ELSE p_amount END,
                        rate_window = v_window
                    WHERE b.account_id = p_account AND b.pool = v_pool
                        AND b.bucket = v_wait AND b.available >= p_amount
                    RETURNING b.bucket INTO v_bucket;
                EXCEPTION WHEN lock_not_available THEN
                    v_bucket := NULL;  -- a queue: the general path decides
                END;
                PERFORM set_config('lock_timeout', v_lock_timeout, true);
            END IF;
        END IF;
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
    IF v_checked THEN
        -- The sums read before the hold (no second read), with this Reserve's own change.
        allowance_remaining := v_allowance_available
            - CASE WHEN v_pool = 'allowance' THEN p_amount ELSE 0 END;
        purchased_remaining := v_purchased_available
            - CASE WHEN v_pool = 'purchased' THEN p_amount ELSE 0 END;
        allowance_held := v_allowance_held + CASE WHEN v_pool = 'allowance' THEN p_amount ELSE 0 END;
        purchased_held := v_purchased_held + CASE WHEN v_pool = 'purchased' THEN p_amount ELSE 0 END;
        used := v_used;
    ELSE
        SELECT coalesce(sum(b.available) FILTER (WHERE b.pool = 'allowance'), 0),
               coalesce(sum(b.available) FILTER (WHERE b.pool = 'purchased'), 0),
               coalesce(sum(b.held) FILTER (WHERE b.pool = 'allowance'), 0),
               coalesce(sum(b.held) FILTER (WHERE b.pool = 'purchased'), 0),
               coalesce(sum(b.used), 0)
        INTO allowance_remaining, purchased_remaining, allowance_held, purchased_held, used
        FROM buckets AS b WHERE b.account_id = p_account;
    END IF;
    RETURN NEXT;
END;
$$"""

# Downgrade: meter_commit_fast as migration 0013 left it.
METER_COMMIT_FAST = """CREATE OR REPLACE FUNCTION meter_commit_fast(
    p_account text, p_hold uuid, p_input bigint, p_output bigint, p_clock_offset double precision, p_caller text
)
RETURNS TABLE (
    outcome text, charged bigint, cost bigint, late boolean, period_start timestamptz,
    period_end timestamptz, plan_id text, allowance_total bigint, debt bigint, allowance_remaining bigint,
    purchased_remaining bigint, allowance_held bigint, purchased_held bigint, used bigint, warned smallint
)
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
$$"""

FUNCTIONS = [
    METER_WEIGHTED_TOKENS,
    METER_COST_MICROS,
    METER_BALANCE,
    METER_LOCK_BUCKETS,
    METER_SPREAD,
    METER_TAKE,
    METER_PAY_DEBT,
    METER_SETTLE,
    METER_COUNT_USAGE,
    METER_COMMIT,
    METER_RELEASE,
    METER_EXPIRE,
    METER_EXTEND,
    METER_HOLD_IN_ONE_BUCKET,
    METER_HOLD_ACROSS_BUCKETS,
    METER_RATE_REFUSAL,
    METER_RESERVE,
]

DROPPED = ["meter_reserve_fast", "meter_commit_fast"]
NEW = [
    "meter_reserve",
    "meter_rate_refusal",
    "meter_hold_across_buckets",
    "meter_hold_in_one_bucket",
    "meter_extend",
    "meter_expire",
    "meter_release",
    "meter_commit",
    "meter_count_usage",
    "meter_settle",
    "meter_pay_debt",
    "meter_take",
    "meter_spread",
    "meter_lock_buckets",
    "meter_balance",
    "meter_cost_micros",
    "meter_weighted_tokens",
]


def upgrade() -> None:
    for name in DROPPED:
        op.execute(f"DROP FUNCTION {name}")
    for function in FUNCTIONS:
        op.execute(function)


def downgrade() -> None:
    for name in NEW:
        op.execute(f"DROP FUNCTION {name}")
    op.execute(METER_RESERVE_FAST)
    op.execute(METER_COMMIT_FAST)
