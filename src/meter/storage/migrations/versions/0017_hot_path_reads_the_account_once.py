"""The hot path's cost back to the one-statement path's: meter_balance and meter_rate_limits take
the account row their caller has already read (a second read of it cost each Reserve and Commit
about 30 microseconds), meter_settle takes it too and returns the debt after (so Commit and Release
no longer read it again), meter_reserve calls meter_rate_refusal only for an account with a limit,
meter_count_usage, meter_lock_buckets and meter_spread are PL/pgSQL, whose plans are kept (a SQL
function run by PERFORM is planned again at every call: 130 microseconds per Commit), and
meter_settle updates the hold before its balance rows, which then stay locked for one statement
less (a hot account's Reserves wait on them).

Frozen copies of src/meter/storage/sql/*.sql as they are at this revision; the downgrade installs
the copies of 0014 and 0016.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-28
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# Functions whose arguments or results change: dropped, then created anew.
CHANGED_SIGNATURES_0016 = (
    "meter_balance(text)",
    "meter_rate_limits(text, text[], bigint[], bigint[], bigint[])",
    "meter_pay_debt(text, bigint, bigint, text, text, timestamptz, text)",
    "meter_settle(holds, bigint, text, timestamptz, text, timestamptz, text)",
)
CHANGED_SIGNATURES_0017 = (
    "meter_balance(accounts)",
    "meter_rate_limits(accounts, text[], bigint[], bigint[], bigint[])",
    "meter_pay_debt(text, bigint, bigint, text, text, timestamptz, text)",
    "meter_settle(holds, accounts, bigint, text, text, timestamptz, text)",
)

METER_BALANCE = """CREATE OR REPLACE FUNCTION meter_balance(p_account accounts)
RETURNS TABLE (
    plan_id text, period_start timestamptz, period_end timestamptz, allowance_total bigint,
    debt bigint, warned smallint, allowance_remaining bigint, purchased_remaining bigint,
    allowance_held bigint, purchased_held bigint, used bigint
)
LANGUAGE sql STABLE AS $$
    SELECT p_account.plan_id, p_account.period_start, p_account.period_end, p_account.allowance_total,
        p_account.debt,
        CASE WHEN p_account.warned_period_start = p_account.period_start THEN p_account.warned_levels ELSE 0 END
            ::smallint,
        coalesce(sum(b.available) FILTER (WHERE b.pool = 'allowance'), 0)::bigint,
        coalesce(sum(b.available) FILTER (WHERE b.pool = 'purchased'), 0)::bigint,
        coalesce(sum(b.held) FILTER (WHERE b.pool = 'allowance'), 0)::bigint,
        coalesce(sum(b.held) FILTER (WHERE b.pool = 'purchased'), 0)::bigint,
        coalesce(sum(b.used), 0)::bigint
    FROM buckets AS b WHERE b.account_id = p_account.account_id
$$"""

METER_RATE_LIMITS = """CREATE OR REPLACE FUNCTION meter_rate_limits(
    p_account accounts, p_plans text[], p_requests_per_minute bigint[], p_tokens_per_minute bigint[],
    p_concurrent_holds bigint[]
)
RETURNS TABLE (requests_per_minute bigint, tokens_per_minute bigint, concurrent_holds bigint)
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(p_account.requests_per_minute,
            nullif(p_requests_per_minute[array_position(p_plans, p_account.plan_id)], 0)),
        coalesce(p_account.tokens_per_minute,
            nullif(p_tokens_per_minute[array_position(p_plans, p_account.plan_id)], 0)),
        coalesce(p_account.concurrent_holds,
            nullif(p_concurrent_holds[array_position(p_plans, p_account.plan_id)], 0))
$$"""

METER_PAY_DEBT = """CREATE OR REPLACE FUNCTION meter_pay_debt(
    p_account text, p_allowance bigint, p_purchased bigint, p_ref text, p_reservation text,
    p_now timestamptz, p_caller text,
    OUT allowance_left bigint, OUT purchased_left bigint, OUT debt_left bigint
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
    debt_left := v_debt - v_from_allowance - v_from_purchased;
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
    p_hold holds, p_account accounts, p_charge bigint, p_status text, p_reservation text, p_now timestamptz,
    p_caller text, OUT shortfall bigint, OUT debt bigint
) LANGUAGE plpgsql AS $$
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
BEGIN
    shortfall := 0;
    debt := p_account.debt;
    IF p_hold.period_start <> p_account.period_start THEN
        v_expired := v_back_allowance;  -- the period it was taken in has ended
        v_back_allowance := 0;
    END IF;
    IF v_over > 0 OR (debt > 0 AND v_back_allowance + v_back_purchased > 0) THEN
        PERFORM 1 FROM accounts AS a WHERE a.account_id = p_hold.account_id FOR UPDATE;  -- lock order
    END IF;
    IF v_over > 0 THEN
        PERFORM meter_lock_buckets(p_hold.account_id);
        SELECT t.from_allowance, t.from_purchased, t.shortfall INTO v_from_allowance, v_from_purchased, shortfall
        FROM meter_take(p_hold.account_id, v_over) AS t;
        IF shortfall > 0 THEN
            UPDATE accounts AS a SET debt = a.debt + shortfall, updated_at = p_now
            WHERE a.account_id = p_hold.account_id
            RETURNING a.debt INTO debt;
        END IF;
    ELSIF debt > 0 THEN
        SELECT d.allowance_left, d.purchased_left, d.debt_left INTO v_back_allowance, v_back_purchased, debt
        FROM meter_pay_debt(p_hold.account_id, v_back_allowance, v_back_purchased, NULL, p_reservation, p_now,
            p_caller) AS d;
    END IF;
    INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, reservation_id)
    SELECT p_hold.account_id, p_now, p_caller, v.kind, v.pool, v.amount, p_reservation
    FROM (VALUES (1, 'usage', 'allowance', -(v_used_allowance + v_from_allowance)),
        (2, 'usage', 'purchased', -(v_used_purchased + v_from_purchased)),
        (3, 'usage', 'debt', -shortfall),
        (4, 'expiry', 'allowance', -v_expired)) AS v (n, kind, pool, amount)
    WHERE v.amount <> 0 ORDER BY v.n;
    UPDATE holds AS h SET status = p_status, settled_at = p_now, usage_input_tokens = p_hold.usage_input_tokens,
        usage_output_tokens = p_hold.usage_output_tokens, charged_tokens = p_hold.charged_tokens,
        cost_micros = p_hold.cost_micros, unbilled_tokens = CASE WHEN p_status = 'committed' THEN shortfall END,
        late = p_hold.late
    WHERE h.account_id = p_hold.account_id AND h.hold_id = p_hold.hold_id;
    -- The hold's balance rows last, so that they stay locked for as short a time as possible: a
    -- Reserve of the account may be waiting for one.
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
END;
$$"""

METER_COUNT_USAGE = """CREATE OR REPLACE FUNCTION meter_count_usage(p_hold holds, p_now timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
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
        unbilled_tokens = u.unbilled_tokens + excluded.unbilled_tokens;
END;
$$"""

METER_LOCK_BUCKETS = """CREATE OR REPLACE FUNCTION meter_lock_buckets(p_account text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM FROM buckets AS b WHERE b.account_id = p_account ORDER BY b.pool, b.bucket FOR UPDATE;
END;
$$"""

METER_SPREAD = """CREATE OR REPLACE FUNCTION meter_spread(p_account text, p_pool text, p_available bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WITH n AS (
        SELECT count(*) AS rows FROM buckets AS b WHERE b.account_id = p_account AND b.pool = p_pool
    )
    UPDATE buckets AS b SET available = p_available / n.rows
        + CASE WHEN b.bucket < p_available % n.rows THEN 1 ELSE 0 END
    FROM n WHERE b.account_id = p_account AND b.pool = p_pool;
END;
$$"""

METER_RATE_REFUSAL = """CREATE OR REPLACE FUNCTION meter_rate_refusal(
    p_account text, p_amount bigint, p_requests_per_minute bigint, p_tokens_per_minute bigint,
    p_concurrent_holds bigint, p_now timestamptz, p_sweep_seconds double precision
)
RETURNS TABLE (limit_name text, limit_value bigint, retry_after double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_minute_left double precision :=
        greatest(0, extract(epoch FROM date_trunc('minute', p_now) + interval '1 minute' - p_now));
    v_requests bigint;
    v_tokens bigint;
    v_open bigint;
    v_soonest timestamptz;
BEGIN
    IF p_tokens_per_minute < p_amount THEN
        RETURN QUERY SELECT 'tokensPerMinute', p_tokens_per_minute, NULL::double precision;
        RETURN;
    END IF;
    SELECT c.requests, c.tokens, c.open_holds INTO v_requests, v_tokens, v_open
    FROM meter_rate_counts(p_account, p_now) AS c;
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
    v_settled record;
BEGIN
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF v_hold.hold_id IS NULL THEN
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
    ELSIF v_account.period_end <= v_now THEN
        outcome := 'period_ended';
    ELSE
        outcome := 'committed';
        v_hold.charged_tokens := meter_weighted_tokens(p_input, p_output, v_hold.input_weight,
            v_hold.output_weight);
        v_hold.cost_micros := meter_cost_micros(p_input, p_output, v_hold.input_price, v_hold.output_price);
        v_hold.late := v_hold.status = 'expired' OR v_now >= v_hold.expires_at;
        v_hold.usage_input_tokens := p_input;
        v_hold.usage_output_tokens := p_output;
        v_settled := meter_settle(v_hold, v_account, v_hold.charged_tokens, 'committed', p_reservation, v_now,
            p_caller);
        v_hold.unbilled_tokens := v_settled.shortfall;
        v_account.debt := v_settled.debt;
        PERFORM meter_count_usage(v_hold, v_now);
    END IF;
    IF outcome IN ('committed', 'replayed') THEN
        charged := v_hold.charged_tokens;
        cost := v_hold.cost_micros;
        unbilled := v_hold.unbilled_tokens;
        late := v_hold.late;
    END IF;
    -- No such account: a balance of NULLs.
    RETURN QUERY SELECT outcome, reused_field, charged, cost, unbilled, late, b.*
        FROM meter_balance(v_account) AS b;
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
    v_settled record;
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
            v_settled := meter_settle(v_hold, v_account, 0, 'released', p_reservation, v_now, p_caller);
            v_account.debt := v_settled.debt;
        ELSIF v_hold.status = 'expired' THEN
            UPDATE holds AS h SET status = 'released', settled_at = v_now
            WHERE h.account_id = p_account AND h.hold_id = p_hold;
        END IF;
    END IF;
    RETURN QUERY SELECT outcome, b.* FROM meter_balance(v_account) AS b;  -- no such account: NULLs
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
    PERFORM meter_settle(v_hold, v_account, 0, 'expired', p_reservation, v_now, p_caller);
    RETURN 'expired';
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
    v_first smallint;
    v_bucket smallint;
    v_allowance bigint := 0;
    v_purchased bigint := 0;
    v_across record;
    v_limits record;
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
        SELECT * INTO v_limits
        FROM meter_rate_limits(v_account, p_plans, p_requests_per_minute, p_tokens_per_minute, p_concurrent_holds);
        IF num_nonnulls(v_limits.requests_per_minute, v_limits.tokens_per_minute, v_limits.concurrent_holds) > 0
        THEN
            SELECT r.limit_name, r.limit_value, r.retry_after INTO limit_name, limit_value, retry_after
            FROM meter_rate_refusal(p_account, required, v_limits.requests_per_minute, v_limits.tokens_per_minute,
                v_limits.concurrent_holds, v_now, p_sweep_seconds) AS r;
            IF FOUND THEN
                outcome := 'rate_limited';
            END IF;
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
        limit_value, retry_after, required, coalesce(across, false), b.* FROM meter_balance(v_account) AS b;
END;
$$"""

# Downgrade: the functions as migrations 0014 and 0016 installed them.

METER_BALANCE_0016 = """CREATE OR REPLACE FUNCTION meter_balance(p_account text)
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

METER_RATE_LIMITS_0016 = """CREATE OR REPLACE FUNCTION meter_rate_limits(
    p_account text, p_plans text[], p_requests_per_minute bigint[], p_tokens_per_minute bigint[],
    p_concurrent_holds bigint[]
)
RETURNS TABLE (requests_per_minute bigint, tokens_per_minute bigint, concurrent_holds bigint)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(a.requests_per_minute, nullif(p_requests_per_minute[array_position(p_plans, a.plan_id)], 0)),
        coalesce(a.tokens_per_minute, nullif(p_tokens_per_minute[array_position(p_plans, a.plan_id)], 0)),
        coalesce(a.concurrent_holds, nullif(p_concurrent_holds[array_position(p_plans, a.plan_id)], 0))
    FROM accounts AS a WHERE a.account_id = p_account
$$"""

METER_PAY_DEBT_0016 = """CREATE OR REPLACE FUNCTION meter_pay_debt(
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

METER_SETTLE_0016 = """CREATE OR REPLACE FUNCTION meter_settle(
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

METER_COUNT_USAGE_0016 = """CREATE OR REPLACE FUNCTION meter_count_usage(p_hold holds, p_now timestamptz)
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

METER_LOCK_BUCKETS_0016 = """CREATE OR REPLACE FUNCTION meter_lock_buckets(p_account text) RETURNS void LANGUAGE sql AS $$
    SELECT NULL FROM buckets AS b WHERE b.account_id = p_account ORDER BY b.pool, b.bucket FOR UPDATE
$$"""

METER_SPREAD_0016 = """CREATE OR REPLACE FUNCTION meter_spread(p_account text, p_pool text, p_available bigint)
RETURNS void LANGUAGE sql AS $$
    WITH n AS (
        SELECT count(*) AS rows FROM buckets AS b WHERE b.account_id = p_account AND b.pool = p_pool
    )
    UPDATE buckets AS b SET available = p_available / n.rows
        + CASE WHEN b.bucket < p_available % n.rows THEN 1 ELSE 0 END
    FROM n WHERE b.account_id = p_account AND b.pool = p_pool
$$"""

METER_RATE_REFUSAL_0016 = """CREATE OR REPLACE FUNCTION meter_rate_refusal(
    p_account text, p_amount bigint, p_requests_per_minute bigint, p_tokens_per_minute bigint,
    p_concurrent_holds bigint, p_now timestamptz, p_sweep_seconds double precision
)
RETURNS TABLE (limit_name text, limit_value bigint, retry_after double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_minute_left double precision :=
        greatest(0, extract(epoch FROM date_trunc('minute', p_now) + interval '1 minute' - p_now));
    v_requests bigint;
    v_tokens bigint;
    v_open bigint;
    v_soonest timestamptz;
BEGIN
    IF p_requests_per_minute IS NULL AND p_tokens_per_minute IS NULL AND p_concurrent_holds IS NULL THEN
        RETURN;  -- no limit: nothing to read
    END IF;
    IF p_tokens_per_minute < p_amount THEN
        RETURN QUERY SELECT 'tokensPerMinute', p_tokens_per_minute, NULL::double precision;
        RETURN;
    END IF;
    SELECT c.requests, c.tokens, c.open_holds INTO v_requests, v_tokens, v_open
    FROM meter_rate_counts(p_account, p_now) AS c;
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

METER_COMMIT_0016 = """CREATE OR REPLACE FUNCTION meter_commit(
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

METER_RELEASE_0016 = """CREATE OR REPLACE FUNCTION meter_release(
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

METER_EXPIRE_0016 = """CREATE OR REPLACE FUNCTION meter_expire(
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

METER_RESERVE_0016 = """CREATE OR REPLACE FUNCTION meter_reserve(
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
        SELECT r.limit_name, r.limit_value, r.retry_after INTO limit_name, limit_value, retry_after
        FROM meter_rate_limits(p_account, p_plans, p_requests_per_minute, p_tokens_per_minute, p_concurrent_holds)
            AS l,
            meter_rate_refusal(p_account, required, l.requests_per_minute, l.tokens_per_minute, l.concurrent_holds,
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


def upgrade() -> None:
    for signature in CHANGED_SIGNATURES_0016:
        op.execute(f"DROP FUNCTION {signature}")
    for function in (
        METER_BALANCE,
        METER_RATE_LIMITS,
        METER_PAY_DEBT,
        METER_SETTLE,
        METER_COUNT_USAGE,
        METER_LOCK_BUCKETS,
        METER_SPREAD,
        METER_RATE_REFUSAL,
        METER_COMMIT,
        METER_RELEASE,
        METER_EXPIRE,
        METER_RESERVE,
    ):
        op.execute(function)


def downgrade() -> None:
    for signature in CHANGED_SIGNATURES_0017:
        op.execute(f"DROP FUNCTION {signature}")
    for function in (
        METER_BALANCE_0016,
        METER_RATE_LIMITS_0016,
        METER_PAY_DEBT_0016,
        METER_SETTLE_0016,
        METER_COUNT_USAGE_0016,
        METER_LOCK_BUCKETS_0016,
        METER_SPREAD_0016,
        METER_RATE_REFUSAL_0016,
        METER_COMMIT_0016,
        METER_RELEASE_0016,
        METER_EXPIRE_0016,
        METER_RESERVE_0016,
    ):
        op.execute(function)
