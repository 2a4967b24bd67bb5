"""Reserve looks at whether any allowance is left before it looks for a row of it, and assigns the
rate-limit check's one record: an account that has used its allowance up (or has none) no longer
searches its allowance rows in vain on every Reserve (a FOR UPDATE SKIP LOCKED query and a second
read, about 70 microseconds), and meter_rate_refusal returns one record, not a set, so that its
call starts no executor. The pool chosen is the same: allowance while any is left, purchased only
when none is.

Frozen copies of src/meter/storage/sql/meter_rate_refusal.sql and meter_reserve.sql as they are at
this revision; the downgrade installs the copies of 0018 and 0017. meter_rate_refusal's result type
changes, so it is dropped and created again (PL/pgSQL keeps no dependency on it: meter_reserve is
replaced after it).

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-28
"""

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

METER_RATE_REFUSAL = """CREATE OR REPLACE FUNCTION meter_rate_refusal(
    p_account text, p_amount bigint, p_requests_per_minute bigint, p_tokens_per_minute bigint,
    p_concurrent_holds bigint, p_now timestamptz, p_sweep_seconds double precision,
    OUT limit_name text, OUT limit_value bigint, OUT retry_after double precision
) LANGUAGE plpgsql AS $$
DECLARE
    v_minute_left double precision;
    v_requests bigint;
    v_tokens bigint;
    v_open bigint;
    v_soonest timestamptz;
BEGIN
    IF p_tokens_per_minute < p_amount THEN
        limit_name := 'tokensPerMinute';
        limit_value := p_tokens_per_minute;
        RETURN;
    END IF;
    SELECT c.requests, c.tokens, c.open_holds INTO v_requests, v_tokens, v_open
    FROM meter_rate_counts(p_account, p_now) AS c;
    IF NOT (v_requests + 1 > p_requests_per_minute OR v_tokens + p_amount > p_tokens_per_minute
        OR v_open + 1 > p_concurrent_holds) THEN
        RETURN;  -- most Reserves: no query picks among the limits
    END IF;
    v_minute_left := greatest(0, extract(epoch FROM date_trunc('minute', p_now) + interval '1 minute' - p_now));
    IF v_open + 1 > p_concurrent_holds THEN
        SELECT min(h.expires_at) INTO v_soonest FROM holds AS h
        WHERE h.status = 'open' AND h.account_id = p_account;
    END IF;
    -- In this order, so that of limits keeping the Reserve out as long the first is named.
    SELECT r.name, r.value, r.wait INTO limit_name, limit_value, retry_after FROM (VALUES
        (1, 'requestsPerMinute', p_requests_per_minute, v_minute_left, v_requests + 1 > p_requests_per_minute),
        (2, 'tokensPerMinute', p_tokens_per_minute, v_minute_left, v_tokens + p_amount > p_tokens_per_minute),
        (3, 'concurrentHolds', p_concurrent_holds,
            coalesce(greatest(0, extract(epoch FROM v_soonest - p_now)), 0) + p_sweep_seconds,
            v_open + 1 > p_concurrent_holds)
    ) AS r (n, name, value, wait, over)
    WHERE r.over ORDER BY r.wait DESC, r.n LIMIT 1;
END;
$$
"""

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
    v_refusal record;
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
            v_refusal := meter_rate_refusal(p_account, required, v_limits.requests_per_minute,
                v_limits.tokens_per_minute, v_limits.concurrent_holds, v_now, p_sweep_seconds);
            IF v_refusal.limit_name IS NOT NULL THEN
                outcome := 'rate_limited';
                limit_name := v_refusal.limit_name;
                limit_value := v_refusal.limit_value;
                retry_after := v_refusal.retry_after;
            END IF;
        END IF;
    END IF;
    IF outcome IS NULL THEN
        v_first := p_start % v_account.bucket_count;
        -- Whether any allowance is left decides the pool: looked at first, since an account that
        -- has used its allowance up (or has none) would otherwise look for a row of it in vain.
        PERFORM 1 FROM buckets AS b WHERE b.account_id = p_account AND b.pool = 'allowance' AND b.available > 0;
        IF FOUND THEN
            v_bucket := meter_hold_in_one_bucket(p_account, 'allowance', required, v_first,
                v_account.bucket_count, v_window, p_wait_ms);
            v_allowance := CASE WHEN v_bucket IS NOT NULL THEN required ELSE 0 END;
        ELSE
            v_bucket := meter_hold_in_one_bucket(p_account, 'purchased', required, v_first,
                v_account.bucket_count, v_window, p_wait_ms);
            v_purchased := CASE WHEN v_bucket IS NOT NULL THEN required ELSE 0 END;
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
$$
"""

METER_RATE_REFUSAL_0018 = """CREATE OR REPLACE FUNCTION meter_rate_refusal(
    p_account text, p_amount bigint, p_requests_per_minute bigint, p_tokens_per_minute bigint,
    p_concurrent_holds bigint, p_now timestamptz, p_sweep_seconds double precision
)
RETURNS TABLE (limit_name text, limit_value bigint, retry_after double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_minute_left double precision;
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
    IF NOT (v_requests + 1 > p_requests_per_minute OR v_tokens + p_amount > p_tokens_per_minute
        OR v_open + 1 > p_concurrent_holds) THEN
        RETURN;  -- most Reserves: no query picks among the limits
    END IF;
    v_minute_left := greatest(0, extract(epoch FROM date_trunc('minute', p_now) + interval '1 minute' - p_now));
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
$$
"""

METER_RESERVE_0017 = """CREATE OR REPLACE FUNCTION meter_reserve(
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
$$
"""


def upgrade() -> None:
    op.execute("DROP FUNCTION meter_rate_refusal")
    op.execute(METER_RATE_REFUSAL)
    op.execute(METER_RESERVE)


def downgrade() -> None:
    op.execute("DROP FUNCTION meter_rate_refusal")
    op.execute(METER_RATE_REFUSAL_0018)
    op.execute(METER_RESERVE_0017)
