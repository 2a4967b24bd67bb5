"""Token classes priced apart and usage by label (issue 21).

A call's usage has five classes: input, cached input (cache reads), cache writes, output and
reasoning; each hold pins every class's price and weight of its catalog version, and its charge and
cost are each rounded once over all of them (meter_priced_usage). Holds also pin usage_labels, the
labels of the keys the catalog aggregates, and usage_daily counts each day's calls by them too (its
key gains labels). The usage_records view shows the classes and summed labels. Holds that can still be committed (open, expired, charged at expiry) get their
model's input price and weight for cached input and cache writes and its output's for reasoning,
which gives them today's charges.

Frozen copies of src/meter/storage/sql/meter_weighted_tokens.sql, meter_cost_micros.sql,
meter_priced_usage.sql, meter_settle.sql, meter_count_usage.sql, meter_correct_expired.sql,
meter_expire.sql, meter_commit.sql, meter_commit_many.sql, meter_reserve.sql,
meter_reserve_many.sql and meter_charge_usage.sql as they are at this revision; the downgrade
installs the copies of 0014, 0019, 0021, 0022, 0024, 0029 and 0030.

Revision ID: 0031
Revises: 0030
Create Date: 2026-11-29
"""

from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None

METER_WEIGHTED_TOKENS = """CREATE OR REPLACE FUNCTION meter_weighted_tokens(
    p_input bigint, p_cached_input bigint, p_cache_write bigint, p_output bigint, p_reasoning bigint,
    p_input_weight bigint, p_cached_input_weight bigint, p_cache_write_weight bigint, p_output_weight bigint,
    p_reasoning_weight bigint
) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_input * p_input_weight + p_cached_input * p_cached_input_weight + p_cache_write * p_cache_write_weight
        + p_output * p_output_weight + p_reasoning * p_reasoning_weight + 999999) / 1000000
$$"""

METER_COST_MICROS = """CREATE OR REPLACE FUNCTION meter_cost_micros(
    p_input bigint, p_cached_input bigint, p_cache_write bigint, p_output bigint, p_reasoning bigint,
    p_input_price bigint, p_cached_input_price bigint, p_cache_write_price bigint, p_output_price bigint,
    p_reasoning_price bigint
) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_input * p_input_price + p_cached_input * p_cached_input_price + p_cache_write * p_cache_write_price
        + p_output * p_output_price + p_reasoning * p_reasoning_price + 999999) / 1000000
$$"""

METER_PRICED_USAGE = """CREATE OR REPLACE FUNCTION meter_priced_usage(
    p_hold holds, p_input bigint, p_cached_input bigint, p_cache_write bigint, p_output bigint, p_reasoning bigint
) RETURNS holds LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    p_hold.usage_input_tokens := p_input;
    p_hold.usage_cached_input_tokens := p_cached_input;
    p_hold.usage_cache_write_tokens := p_cache_write;
    p_hold.usage_output_tokens := p_output;
    p_hold.usage_reasoning_tokens := p_reasoning;
    p_hold.charged_tokens := meter_weighted_tokens(p_input, p_cached_input, p_cache_write, p_output, p_reasoning,
        p_hold.input_weight, p_hold.cached_input_weight, p_hold.cache_write_weight, p_hold.output_weight,
        p_hold.reasoning_weight);
    p_hold.cost_micros := meter_cost_micros(p_input, p_cached_input, p_cache_write, p_output, p_reasoning,
        p_hold.input_price, p_hold.cached_input_price, p_hold.cache_write_price, p_hold.output_price,
        p_hold.reasoning_price);
    RETURN p_hold;
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
    v_account_locked boolean := false;
BEGIN
    shortfall := 0;
    debt := p_account.debt;
    IF p_hold.period_start <> p_account.period_start THEN
        v_expired := v_back_allowance;  -- the period it was taken in has ended
        v_back_allowance := 0;
    END IF;
    IF v_over > 0 OR (debt > 0 AND v_back_allowance + v_back_purchased > 0) THEN
        PERFORM 1 FROM accounts AS a WHERE a.account_id = p_hold.account_id FOR UPDATE;  -- lock order
        v_account_locked := true;
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
        usage_output_tokens = p_hold.usage_output_tokens, usage_cached_input_tokens = p_hold.usage_cached_input_tokens,
        usage_cache_write_tokens = p_hold.usage_cache_write_tokens,
        usage_reasoning_tokens = p_hold.usage_reasoning_tokens, charged_tokens = p_hold.charged_tokens,
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
    IF v_account_locked THEN
        PERFORM meter_debt_events(p_hold.account_id, p_reservation, p_now);
    END IF;
END;
$$"""

METER_COUNT_USAGE = """CREATE OR REPLACE FUNCTION meter_count_usage(p_hold holds, p_now timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_requests bigint;
BEGIN
    INSERT INTO usage_daily AS u (account_id, day, model, labels, pool, bucket, requests, input_tokens,
        output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, charged_tokens, cost_micros,
        unbilled_tokens)
    VALUES (p_hold.account_id, (p_now AT TIME ZONE 'UTC')::date, p_hold.model, p_hold.usage_labels,
        CASE WHEN p_hold.allowance_held > 0 THEN 'allowance' ELSE 'purchased' END,
        CASE WHEN p_hold.allowance_held > 0 THEN p_hold.allowance_bucket ELSE p_hold.purchased_bucket END,
        1, p_hold.usage_input_tokens, p_hold.usage_output_tokens, p_hold.usage_cached_input_tokens,
        p_hold.usage_cache_write_tokens, p_hold.usage_reasoning_tokens, p_hold.charged_tokens, p_hold.cost_micros,
        p_hold.unbilled_tokens)
    ON CONFLICT (account_id, day, model, labels, pool, bucket) DO UPDATE SET requests = u.requests + 1,
        input_tokens = u.input_tokens + excluded.input_tokens,
        output_tokens = u.output_tokens + excluded.output_tokens,
        cached_input_tokens = u.cached_input_tokens + excluded.cached_input_tokens,
        cache_write_tokens = u.cache_write_tokens + excluded.cache_write_tokens,
        reasoning_tokens = u.reasoning_tokens + excluded.reasoning_tokens,
        charged_tokens = u.charged_tokens + excluded.charged_tokens,
        cost_micros = u.cost_micros + excluded.cost_micros,
        unbilled_tokens = u.unbilled_tokens + excluded.unbilled_tokens
    RETURNING u.requests INTO v_requests;
    RETURN v_requests;
END;
$$"""

METER_CORRECT_EXPIRED = """CREATE OR REPLACE FUNCTION meter_correct_expired(
    p_hold holds, p_account accounts, p_status text, p_reservation text, p_now timestamptz, p_caller text,
    OUT shortfall bigint, OUT debt bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_old holds%ROWTYPE;
    v_released boolean := p_status = 'released';
    v_charge bigint := CASE WHEN p_status = 'released' THEN 0 ELSE p_hold.charged_tokens END;
    v_delta bigint;
    v_same_period boolean := p_hold.period_start = p_account.period_start;
    v_from_allowance bigint := 0;
    v_from_purchased bigint := 0;
    v_back_purchased bigint := 0;
    v_back_allowance bigint := 0;
    v_expired bigint := 0;
    v_left_allowance bigint := 0;
    v_left_purchased bigint := 0;
BEGIN
    SELECT * INTO v_old FROM holds AS h WHERE h.account_id = p_hold.account_id AND h.hold_id = p_hold.hold_id;
    v_delta := v_charge - v_old.charged_tokens;
    shortfall := 0;
    SELECT a.debt INTO debt FROM accounts AS a WHERE a.account_id = p_hold.account_id FOR UPDATE;
    PERFORM meter_lock_buckets(p_hold.account_id);
    IF v_delta > 0 THEN
        SELECT t.from_allowance, t.from_purchased, t.shortfall INTO v_from_allowance, v_from_purchased, shortfall
        FROM meter_take(p_hold.account_id, v_delta) AS t;
        IF shortfall > 0 THEN
            UPDATE accounts AS a SET debt = a.debt + shortfall, updated_at = p_now
            WHERE a.account_id = p_hold.account_id
            RETURNING a.debt INTO debt;
        END IF;
    ELSIF v_delta < 0 THEN
        v_back_purchased := least(-v_delta, p_hold.purchased_held);
        v_back_allowance := -v_delta - v_back_purchased;
        IF NOT v_same_period THEN
            v_expired := v_back_allowance;  -- the period it was charged in has ended
            v_back_allowance := 0;
        END IF;
    END IF;
    INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, reservation_id)
    SELECT p_hold.account_id, p_now, p_caller, v.kind, v.pool, v.amount, p_reservation
    FROM (VALUES (1, 'usage', 'allowance', v_back_allowance + v_expired - v_from_allowance),
        (2, 'usage', 'purchased', v_back_purchased - v_from_purchased),
        (3, 'usage', 'debt', -shortfall),
        (4, 'expiry', 'allowance', -v_expired)) AS v (n, kind, pool, amount)
    WHERE v.amount <> 0 ORDER BY v.n;
    v_left_allowance := v_back_allowance;
    v_left_purchased := v_back_purchased;
    IF debt > 0 AND v_back_allowance + v_back_purchased > 0 THEN
        SELECT d.allowance_left, d.purchased_left, d.debt_left INTO v_left_allowance, v_left_purchased, debt
        FROM meter_pay_debt(p_hold.account_id, v_back_allowance, v_back_purchased, NULL, p_reservation, p_now,
            p_caller) AS d;
    END IF;
    IF NOT v_same_period AND v_delta < 0 THEN
        v_back_allowance := 0;  -- the usage it gives back was counted in a period that has ended
        v_back_purchased := 0;
    END IF;
    UPDATE buckets AS b SET available = b.available + v_left_allowance,
        used = b.used + v_from_allowance + shortfall - v_back_allowance
    WHERE b.account_id = p_hold.account_id AND b.pool = 'allowance' AND b.bucket = p_hold.allowance_bucket;
    UPDATE buckets AS b SET available = b.available + v_left_purchased,
        used = b.used + v_from_purchased - v_back_purchased
    WHERE b.account_id = p_hold.account_id AND b.pool = 'purchased' AND b.bucket = p_hold.purchased_bucket;
    -- The expiry's line of the day's usage totals becomes the call's (or goes, for a Release).
    DELETE FROM usage_daily AS u
    WHERE v_released AND u.requests = 1 AND u.account_id = p_hold.account_id
      AND u.day = (v_old.settled_at AT TIME ZONE 'UTC')::date AND u.model = p_hold.model
      AND u.labels = p_hold.usage_labels AND u.pool = CASE WHEN p_hold.allowance_held > 0 THEN 'allowance' ELSE 'purchased' END
      AND u.bucket = CASE WHEN p_hold.allowance_held > 0 THEN p_hold.allowance_bucket ELSE p_hold.purchased_bucket END;
    UPDATE usage_daily AS u SET requests = u.requests - CASE WHEN v_released THEN 1 ELSE 0 END,
        input_tokens = u.input_tokens + CASE WHEN v_released THEN 0 ELSE p_hold.usage_input_tokens END
            - v_old.usage_input_tokens,
        output_tokens = u.output_tokens + CASE WHEN v_released THEN 0 ELSE p_hold.usage_output_tokens END
            - v_old.usage_output_tokens,
        cached_input_tokens = u.cached_input_tokens
            + CASE WHEN v_released THEN 0 ELSE p_hold.usage_cached_input_tokens END - v_old.usage_cached_input_tokens,
        cache_write_tokens = u.cache_write_tokens
            + CASE WHEN v_released THEN 0 ELSE p_hold.usage_cache_write_tokens END - v_old.usage_cache_write_tokens,
        reasoning_tokens = u.reasoning_tokens
            + CASE WHEN v_released THEN 0 ELSE p_hold.usage_reasoning_tokens END - v_old.usage_reasoning_tokens,
        charged_tokens = u.charged_tokens + v_delta,
        cost_micros = u.cost_micros + CASE WHEN v_released THEN 0 ELSE p_hold.cost_micros END - v_old.cost_micros,
        unbilled_tokens = u.unbilled_tokens + shortfall - v_old.unbilled_tokens
    WHERE u.account_id = p_hold.account_id AND u.day = (v_old.settled_at AT TIME ZONE 'UTC')::date
      AND u.model = p_hold.model AND u.labels = p_hold.usage_labels
      AND u.pool = CASE WHEN p_hold.allowance_held > 0 THEN 'allowance' ELSE 'purchased' END
      AND u.bucket = CASE WHEN p_hold.allowance_held > 0 THEN p_hold.allowance_bucket ELSE p_hold.purchased_bucket END;
    UPDATE holds AS h SET status = p_status, charged_at_expiry = false, late = NOT v_released,
        usage_input_tokens = CASE WHEN v_released THEN NULL ELSE p_hold.usage_input_tokens END,
        usage_output_tokens = CASE WHEN v_released THEN NULL ELSE p_hold.usage_output_tokens END,
        usage_cached_input_tokens = CASE WHEN v_released THEN 0 ELSE p_hold.usage_cached_input_tokens END,
        usage_cache_write_tokens = CASE WHEN v_released THEN 0 ELSE p_hold.usage_cache_write_tokens END,
        usage_reasoning_tokens = CASE WHEN v_released THEN 0 ELSE p_hold.usage_reasoning_tokens END,
        charged_tokens = CASE WHEN v_released THEN NULL ELSE v_charge END,
        cost_micros = CASE WHEN v_released THEN NULL ELSE p_hold.cost_micros END,
        unbilled_tokens = CASE WHEN v_released THEN NULL ELSE v_old.unbilled_tokens + shortfall END
    WHERE h.account_id = p_hold.account_id AND h.hold_id = p_hold.hold_id;
    PERFORM meter_debt_events(p_hold.account_id, p_reservation, p_now);
END;
$$"""

METER_EXPIRE = """CREATE OR REPLACE FUNCTION meter_expire(
    p_account text, p_hold uuid, p_reservation text, p_charge boolean, p_clock_offset double precision,
    p_caller text
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_hold holds%ROWTYPE;
    v_account accounts%ROWTYPE;
    v_settled record;
    v_counted bigint;
BEGIN
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    IF NOT FOUND OR v_hold.status <> 'open' OR v_now < v_hold.expires_at THEN
        RETURN 'skipped';
    END IF;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF v_account.period_end <= v_now THEN
        RETURN 'period_ended';
    END IF;
    IF NOT p_charge THEN
        PERFORM meter_settle(v_hold, v_account, 0, 'expired', p_reservation, v_now, p_caller);
        RETURN 'expired';
    END IF;
    -- The max output at the dearer of output and reasoning: the worst case Reserve held.
    v_hold := meter_priced_usage(v_hold, v_hold.input_tokens, 0, 0,
        CASE WHEN v_hold.reasoning_weight > v_hold.output_weight THEN 0 ELSE v_hold.max_output_tokens END,
        CASE WHEN v_hold.reasoning_weight > v_hold.output_weight THEN v_hold.max_output_tokens ELSE 0 END);
    v_hold.late := false;
    v_settled := meter_settle(v_hold, v_account, v_hold.charged_tokens, 'committed', p_reservation, v_now,
        p_caller);
    v_hold.unbilled_tokens := v_settled.shortfall;
    UPDATE holds AS h SET charged_at_expiry = true WHERE h.account_id = p_account AND h.hold_id = p_hold;
    v_counted := meter_count_usage(v_hold, v_now);
    RETURN 'charged';
END;
$$"""

METER_COMMIT = """CREATE OR REPLACE FUNCTION meter_commit(
    p_account text, p_hold uuid, p_reservation text, p_input bigint, p_output bigint, p_cached_input bigint,
    p_cache_write bigint, p_reasoning bigint, p_clock_offset double precision, p_caller text
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
    v_counted bigint;  -- the day's requests on the totals row (meter_count_usage)
BEGIN
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF v_hold.hold_id IS NULL THEN
        outcome := 'not_found';
    ELSIF v_hold.charged_at_expiry AND v_account.period_end > v_now THEN
        outcome := 'committed';
        v_hold := meter_priced_usage(v_hold, p_input, p_cached_input, p_cache_write, p_output, p_reasoning);
        v_hold.late := true;
        v_settled := meter_correct_expired(v_hold, v_account, 'committed', p_reservation, v_now, p_caller);
        v_hold.unbilled_tokens := v_hold.unbilled_tokens + v_settled.shortfall;
        v_account.debt := v_settled.debt;
    ELSIF v_hold.charged_at_expiry THEN
        outcome := 'period_ended';
    ELSIF v_hold.status = 'committed' THEN
        outcome := 'replayed';
        reused_field := CASE
            WHEN v_hold.usage_input_tokens <> p_input THEN 'input_tokens'
            WHEN v_hold.usage_output_tokens <> p_output THEN 'output_tokens'
            WHEN v_hold.usage_cached_input_tokens <> p_cached_input THEN 'cached_input_tokens'
            WHEN v_hold.usage_cache_write_tokens <> p_cache_write THEN 'cache_write_tokens'
            WHEN v_hold.usage_reasoning_tokens <> p_reasoning THEN 'reasoning_tokens'
        END;
        IF reused_field IS NOT NULL THEN
            outcome := 'usage_reused';
        END IF;
    ELSIF v_hold.status = 'released' THEN
        outcome := 'released';
    ELSIF v_account.period_end <= v_now THEN
        outcome := 'period_ended';
    ELSE
        outcome := 'committed';
        v_hold := meter_priced_usage(v_hold, p_input, p_cached_input, p_cache_write, p_output, p_reasoning);
        v_hold.late := v_hold.status = 'expired' OR v_now >= v_hold.expires_at;
        v_settled := meter_settle(v_hold, v_account, v_hold.charged_tokens, 'committed', p_reservation, v_now,
            p_caller);
        v_hold.unbilled_tokens := v_settled.shortfall;
        v_account.debt := v_settled.debt;
        v_counted := meter_count_usage(v_hold, v_now);
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

METER_COMMIT_MANY = """CREATE OR REPLACE FUNCTION meter_commit_many(
    p_accounts text[], p_holds uuid[], p_reservations text[], p_inputs bigint[], p_outputs bigint[],
    p_cached_inputs bigint[], p_cache_writes bigint[], p_reasonings bigint[], p_clock_offset double precision,
    p_callers text[]
)
RETURNS TABLE (
    n integer, outcome text, reused_field text, charged bigint, cost bigint, unbilled bigint, late boolean,
    plan_id text, period_start timestamptz, period_end timestamptz, allowance_total bigint, debt bigint,
    warned smallint, allowance_remaining bigint, purchased_remaining bigint, allowance_held bigint,
    purchased_held bigint, used bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    v_n integer;
BEGIN
    PERFORM meter_lock_accounts(p_accounts);
    FOR v_n IN SELECT i FROM generate_subscripts(p_accounts, 1) AS i ORDER BY p_accounts[i], i LOOP
        RETURN QUERY SELECT v_n, r.* FROM meter_commit(p_accounts[v_n], p_holds[v_n], p_reservations[v_n],
            p_inputs[v_n], p_outputs[v_n], p_cached_inputs[v_n], p_cache_writes[v_n], p_reasonings[v_n],
            p_clock_offset, p_callers[v_n]) AS r;
    END LOOP;
END;
$$"""

METER_RESERVE = """CREATE OR REPLACE FUNCTION meter_reserve(
    p_account text, p_request text, p_hold uuid, p_model text, p_input bigint, p_max_output bigint,
    p_ttl integer, p_labels jsonb, p_catalog_version text, p_input_weight bigint, p_output_weight bigint,
    p_input_price bigint, p_output_price bigint, p_cached_input_weight bigint, p_cache_write_weight bigint,
    p_reasoning_weight bigint, p_cached_input_price bigint, p_cache_write_price bigint, p_reasoning_price bigint,
    p_usage_labels jsonb, p_start integer, p_clock_offset double precision,
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
    required := greatest(1, meter_weighted_tokens(p_input, 0, 0, p_max_output, 0, p_input_weight, 0, 0,
        greatest(p_output_weight, p_reasoning_weight), 0));
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
            cached_input_weight, cache_write_weight, reasoning_weight, cached_input_price, cache_write_price,
            reasoning_price, usage_labels, allowance_held, allowance_bucket, purchased_held, purchased_bucket,
            period_start, status, created_at, expires_at)
        VALUES (p_account, p_hold, p_request, p_model, p_input, p_max_output, p_ttl, p_labels, p_catalog_version,
            p_input_weight, p_output_weight, p_input_price, p_output_price, p_cached_input_weight,
            p_cache_write_weight, p_reasoning_weight, p_cached_input_price, p_cache_write_price, p_reasoning_price,
            p_usage_labels, v_allowance,
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

METER_RESERVE_MANY = """CREATE OR REPLACE FUNCTION meter_reserve_many(
    p_accounts text[], p_requests text[], p_holds uuid[], p_models text[], p_inputs bigint[],
    p_max_outputs bigint[], p_ttls integer[], p_labels jsonb[], p_catalog_versions text[],
    p_input_weights bigint[], p_output_weights bigint[], p_input_prices bigint[], p_output_prices bigint[],
    p_cached_input_weights bigint[], p_cache_write_weights bigint[], p_reasoning_weights bigint[],
    p_cached_input_prices bigint[], p_cache_write_prices bigint[], p_reasoning_prices bigint[],
    p_usage_labels jsonb[], p_starts integer[], p_clock_offset double precision, p_plans text[],
    p_requests_per_minute bigint[], p_tokens_per_minute bigint[], p_concurrent_holds bigint[], p_wait_ms integer,
    p_sweep_seconds double precision
)
RETURNS TABLE (
    n integer, outcome text, hold_id uuid, held bigint, expires_at timestamptz, catalog_version text,
    status text, reused_field text, limit_name text, limit_value bigint, retry_after double precision,
    required bigint, across boolean, plan_id text, period_start timestamptz, period_end timestamptz,
    allowance_total bigint, debt bigint, warned smallint, allowance_remaining bigint,
    purchased_remaining bigint, allowance_held bigint, purchased_held bigint, used bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    v_n integer;
BEGIN
    PERFORM meter_lock_accounts(p_accounts);
    FOR v_n IN SELECT i FROM generate_subscripts(p_accounts, 1) AS i ORDER BY p_accounts[i], i LOOP
        RETURN QUERY SELECT v_n, r.* FROM meter_reserve(p_accounts[v_n], p_requests[v_n], p_holds[v_n],
            p_models[v_n], p_inputs[v_n], p_max_outputs[v_n], p_ttls[v_n], p_labels[v_n],
            p_catalog_versions[v_n], p_input_weights[v_n], p_output_weights[v_n], p_input_prices[v_n],
            p_output_prices[v_n], p_cached_input_weights[v_n], p_cache_write_weights[v_n],
            p_reasoning_weights[v_n], p_cached_input_prices[v_n], p_cache_write_prices[v_n], p_reasoning_prices[v_n],
            p_usage_labels[v_n], p_starts[v_n], p_clock_offset, p_plans, p_requests_per_minute,
            p_tokens_per_minute, p_concurrent_holds, p_wait_ms, p_sweep_seconds) AS r;
    END LOOP;
END;
$$"""

METER_CHARGE_USAGE = """CREATE OR REPLACE FUNCTION meter_charge_usage(
    p_account text, p_request text, p_hold uuid, p_reservation text, p_model text, p_input bigint,
    p_output bigint, p_cached_input bigint, p_cache_write bigint, p_reasoning bigint, p_labels jsonb,
    p_catalog_version text, p_input_weight bigint, p_output_weight bigint, p_input_price bigint,
    p_output_price bigint, p_cached_input_weight bigint, p_cache_write_weight bigint, p_reasoning_weight bigint,
    p_cached_input_price bigint, p_cache_write_price bigint, p_reasoning_price bigint, p_usage_labels jsonb,
    p_clock_offset double precision, p_caller text
)
RETURNS TABLE (
    outcome text, hold_id uuid, reused_field text, charged bigint, cost bigint, unbilled bigint,
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
    v_counted bigint;
BEGIN
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF NOT FOUND THEN
        outcome := 'account_not_found';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.request_id = p_request FOR UPDATE;
    IF FOUND THEN
        reused_field := CASE
            WHEN v_hold.model <> p_model THEN 'model'
            WHEN v_hold.usage_input_tokens IS DISTINCT FROM p_input OR v_hold.status <> 'committed'
                THEN 'input_tokens'
            WHEN v_hold.usage_output_tokens <> p_output THEN 'output_tokens'
            WHEN v_hold.usage_cached_input_tokens <> p_cached_input THEN 'cached_input_tokens'
            WHEN v_hold.usage_cache_write_tokens <> p_cache_write THEN 'cache_write_tokens'
            WHEN v_hold.usage_reasoning_tokens <> p_reasoning THEN 'reasoning_tokens'
            WHEN v_hold.labels <> p_labels THEN 'labels'
        END;
        outcome := CASE WHEN reused_field IS NULL THEN 'replayed' ELSE 'request_reused' END;
    ELSIF v_account.period_end <= v_now THEN
        outcome := 'period_ended';
    ELSE
        outcome := 'committed';
        INSERT INTO holds AS h (account_id, hold_id, request_id, model, input_tokens, max_output_tokens,
            ttl_seconds, labels, catalog_version, input_weight, output_weight, input_price, output_price,
            cached_input_weight, cache_write_weight, reasoning_weight, cached_input_price, cache_write_price,
            reasoning_price, usage_labels, allowance_held, allowance_bucket, purchased_held, purchased_bucket,
            period_start, status, created_at, expires_at)
        VALUES (p_account, p_hold, p_request, p_model, p_input, p_output, 1, p_labels, p_catalog_version,
            p_input_weight, p_output_weight, p_input_price, p_output_price, p_cached_input_weight,
            p_cache_write_weight, p_reasoning_weight, p_cached_input_price, p_cache_write_price, p_reasoning_price,
            p_usage_labels, 0, 0, 0, 0, v_account.period_start, 'open', v_now, v_now)
        RETURNING * INTO v_hold;
        v_hold := meter_priced_usage(v_hold, p_input, p_cached_input, p_cache_write, p_output, p_reasoning);
        v_hold.late := false;
        v_settled := meter_settle(v_hold, v_account, v_hold.charged_tokens, 'committed', p_reservation, v_now,
            p_caller);
        v_hold.unbilled_tokens := v_settled.shortfall;
        v_account.debt := v_settled.debt;
        v_counted := meter_count_usage(v_hold, v_now);
    END IF;
    hold_id := v_hold.hold_id;
    IF outcome IN ('committed', 'replayed') THEN
        charged := v_hold.charged_tokens;
        cost := v_hold.cost_micros;
        unbilled := v_hold.unbilled_tokens;
    END IF;
    RETURN QUERY SELECT outcome, hold_id, reused_field, charged, cost, unbilled, b.*
        FROM meter_balance(v_account) AS b;
END;
$$"""

METER_WEIGHTED_TOKENS_0014 = """CREATE OR REPLACE FUNCTION meter_weighted_tokens(
    p_input bigint, p_output bigint, p_input_weight bigint, p_output_weight bigint
) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_input * p_input_weight + p_output * p_output_weight + 999999) / 1000000
$$"""

METER_COST_MICROS_0014 = """CREATE OR REPLACE FUNCTION meter_cost_micros(
    p_input bigint, p_output bigint, p_input_price bigint, p_output_price bigint
) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_input * p_input_price + p_output * p_output_price + 999999) / 1000000
$$"""

METER_SETTLE_0024 = """CREATE OR REPLACE FUNCTION meter_settle(
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
    v_account_locked boolean := false;
BEGIN
    shortfall := 0;
    debt := p_account.debt;
    IF p_hold.period_start <> p_account.period_start THEN
        v_expired := v_back_allowance;  -- the period it was taken in has ended
        v_back_allowance := 0;
    END IF;
    IF v_over > 0 OR (debt > 0 AND v_back_allowance + v_back_purchased > 0) THEN
        PERFORM 1 FROM accounts AS a WHERE a.account_id = p_hold.account_id FOR UPDATE;  -- lock order
        v_account_locked := true;
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
    IF v_account_locked THEN
        PERFORM meter_debt_events(p_hold.account_id, p_reservation, p_now);
    END IF;
END;
$$"""

METER_COUNT_USAGE_0019 = """CREATE OR REPLACE FUNCTION meter_count_usage(p_hold holds, p_now timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_requests bigint;
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
        unbilled_tokens = u.unbilled_tokens + excluded.unbilled_tokens
    RETURNING u.requests INTO v_requests;
    RETURN v_requests;
END;
$$"""

METER_CORRECT_EXPIRED_0029 = """CREATE OR REPLACE FUNCTION meter_correct_expired(
    p_hold holds, p_account accounts, p_status text, p_reservation text, p_now timestamptz, p_caller text,
    OUT shortfall bigint, OUT debt bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_old holds%ROWTYPE;
    v_released boolean := p_status = 'released';
    v_charge bigint := CASE WHEN p_status = 'released' THEN 0 ELSE p_hold.charged_tokens END;
    v_delta bigint;
    v_same_period boolean := p_hold.period_start = p_account.period_start;
    v_from_allowance bigint := 0;
    v_from_purchased bigint := 0;
    v_back_purchased bigint := 0;
    v_back_allowance bigint := 0;
    v_expired bigint := 0;
    v_left_allowance bigint := 0;
    v_left_purchased bigint := 0;
BEGIN
    SELECT * INTO v_old FROM holds AS h WHERE h.account_id = p_hold.account_id AND h.hold_id = p_hold.hold_id;
    v_delta := v_charge - v_old.charged_tokens;
    shortfall := 0;
    SELECT a.debt INTO debt FROM accounts AS a WHERE a.account_id = p_hold.account_id FOR UPDATE;
    PERFORM meter_lock_buckets(p_hold.account_id);
    IF v_delta > 0 THEN
        SELECT t.from_allowance, t.from_purchased, t.shortfall INTO v_from_allowance, v_from_purchased, shortfall
        FROM meter_take(p_hold.account_id, v_delta) AS t;
        IF shortfall > 0 THEN
            UPDATE accounts AS a SET debt = a.debt + shortfall, updated_at = p_now
            WHERE a.account_id = p_hold.account_id
            RETURNING a.debt INTO debt;
        END IF;
    ELSIF v_delta < 0 THEN
        v_back_purchased := least(-v_delta, p_hold.purchased_held);
        v_back_allowance := -v_delta - v_back_purchased;
        IF NOT v_same_period THEN
            v_expired := v_back_allowance;  -- the period it was charged in has ended
            v_back_allowance := 0;
        END IF;
    END IF;
    INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, reservation_id)
    SELECT p_hold.account_id, p_now, p_caller, v.kind, v.pool, v.amount, p_reservation
    FROM (VALUES (1, 'usage', 'allowance', v_back_allowance + v_expired - v_from_allowance),
        (2, 'usage', 'purchased', v_back_purchased - v_from_purchased),
        (3, 'usage', 'debt', -shortfall),
        (4, 'expiry', 'allowance', -v_expired)) AS v (n, kind, pool, amount)
    WHERE v.amount <> 0 ORDER BY v.n;
    v_left_allowance := v_back_allowance;
    v_left_purchased := v_back_purchased;
    IF debt > 0 AND v_back_allowance + v_back_purchased > 0 THEN
        SELECT d.allowance_left, d.purchased_left, d.debt_left INTO v_left_allowance, v_left_purchased, debt
        FROM meter_pay_debt(p_hold.account_id, v_back_allowance, v_back_purchased, NULL, p_reservation, p_now,
            p_caller) AS d;
    END IF;
    IF NOT v_same_period AND v_delta < 0 THEN
        v_back_allowance := 0;  -- the usage it gives back was counted in a period that has ended
        v_back_purchased := 0;
    END IF;
    UPDATE buckets AS b SET available = b.available + v_left_allowance,
        used = b.used + v_from_allowance + shortfall - v_back_allowance
    WHERE b.account_id = p_hold.account_id AND b.pool = 'allowance' AND b.bucket = p_hold.allowance_bucket;
    UPDATE buckets AS b SET available = b.available + v_left_purchased,
        used = b.used + v_from_purchased - v_back_purchased
    WHERE b.account_id = p_hold.account_id AND b.pool = 'purchased' AND b.bucket = p_hold.purchased_bucket;
    -- The expiry's line of the day's usage totals becomes the call's (or goes, for a Release).
    DELETE FROM usage_daily AS u
    WHERE v_released AND u.requests = 1 AND u.account_id = p_hold.account_id
      AND u.day = (v_old.settled_at AT TIME ZONE 'UTC')::date AND u.model = p_hold.model
      AND u.pool = CASE WHEN p_hold.allowance_held > 0 THEN 'allowance' ELSE 'purchased' END
      AND u.bucket = CASE WHEN p_hold.allowance_held > 0 THEN p_hold.allowance_bucket ELSE p_hold.purchased_bucket END;
    UPDATE usage_daily AS u SET requests = u.requests - CASE WHEN v_released THEN 1 ELSE 0 END,
        input_tokens = u.input_tokens + CASE WHEN v_released THEN 0 ELSE p_hold.usage_input_tokens END
            - v_old.usage_input_tokens,
        output_tokens = u.output_tokens + CASE WHEN v_released THEN 0 ELSE p_hold.usage_output_tokens END
            - v_old.usage_output_tokens,
        charged_tokens = u.charged_tokens + v_delta,
        cost_micros = u.cost_micros + CASE WHEN v_released THEN 0 ELSE p_hold.cost_micros END - v_old.cost_micros,
        unbilled_tokens = u.unbilled_tokens + shortfall - v_old.unbilled_tokens
    WHERE u.account_id = p_hold.account_id AND u.day = (v_old.settled_at AT TIME ZONE 'UTC')::date
      AND u.model = p_hold.model
      AND u.pool = CASE WHEN p_hold.allowance_held > 0 THEN 'allowance' ELSE 'purchased' END
      AND u.bucket = CASE WHEN p_hold.allowance_held > 0 THEN p_hold.allowance_bucket ELSE p_hold.purchased_bucket END;
    UPDATE holds AS h SET status = p_status, charged_at_expiry = false, late = NOT v_released,
        usage_input_tokens = CASE WHEN v_released THEN NULL ELSE p_hold.usage_input_tokens END,
        usage_output_tokens = CASE WHEN v_released THEN NULL ELSE p_hold.usage_output_tokens END,
        charged_tokens = CASE WHEN v_released THEN NULL ELSE v_charge END,
        cost_micros = CASE WHEN v_released THEN NULL ELSE p_hold.cost_micros END,
        unbilled_tokens = CASE WHEN v_released THEN NULL ELSE v_old.unbilled_tokens + shortfall END
    WHERE h.account_id = p_hold.account_id AND h.hold_id = p_hold.hold_id;
    PERFORM meter_debt_events(p_hold.account_id, p_reservation, p_now);
END;
$$"""

METER_EXPIRE_0029 = """CREATE OR REPLACE FUNCTION meter_expire(
    p_account text, p_hold uuid, p_reservation text, p_charge boolean, p_clock_offset double precision,
    p_caller text
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_hold holds%ROWTYPE;
    v_account accounts%ROWTYPE;
    v_settled record;
    v_counted bigint;
BEGIN
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    IF NOT FOUND OR v_hold.status <> 'open' OR v_now < v_hold.expires_at THEN
        RETURN 'skipped';
    END IF;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF v_account.period_end <= v_now THEN
        RETURN 'period_ended';
    END IF;
    IF NOT p_charge THEN
        PERFORM meter_settle(v_hold, v_account, 0, 'expired', p_reservation, v_now, p_caller);
        RETURN 'expired';
    END IF;
    v_hold.usage_input_tokens := v_hold.input_tokens;
    v_hold.usage_output_tokens := v_hold.max_output_tokens;
    v_hold.charged_tokens := meter_weighted_tokens(v_hold.input_tokens, v_hold.max_output_tokens,
        v_hold.input_weight, v_hold.output_weight);
    v_hold.cost_micros := meter_cost_micros(v_hold.input_tokens, v_hold.max_output_tokens, v_hold.input_price,
        v_hold.output_price);
    v_hold.late := false;
    v_settled := meter_settle(v_hold, v_account, v_hold.charged_tokens, 'committed', p_reservation, v_now,
        p_caller);
    v_hold.unbilled_tokens := v_settled.shortfall;
    UPDATE holds AS h SET charged_at_expiry = true WHERE h.account_id = p_account AND h.hold_id = p_hold;
    v_counted := meter_count_usage(v_hold, v_now);
    RETURN 'charged';
END;
$$"""

METER_COMMIT_0029 = """CREATE OR REPLACE FUNCTION meter_commit(
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
    v_counted bigint;  -- the day's requests on the totals row (meter_count_usage)
BEGIN
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF v_hold.hold_id IS NULL THEN
        outcome := 'not_found';
    ELSIF v_hold.charged_at_expiry AND v_account.period_end > v_now THEN
        outcome := 'committed';
        v_hold.charged_tokens := meter_weighted_tokens(p_input, p_output, v_hold.input_weight,
            v_hold.output_weight);
        v_hold.cost_micros := meter_cost_micros(p_input, p_output, v_hold.input_price, v_hold.output_price);
        v_hold.late := true;
        v_hold.usage_input_tokens := p_input;
        v_hold.usage_output_tokens := p_output;
        v_settled := meter_correct_expired(v_hold, v_account, 'committed', p_reservation, v_now, p_caller);
        v_hold.unbilled_tokens := v_hold.unbilled_tokens + v_settled.shortfall;
        v_account.debt := v_settled.debt;
    ELSIF v_hold.charged_at_expiry THEN
        outcome := 'period_ended';
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
        v_counted := meter_count_usage(v_hold, v_now);
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

METER_COMMIT_MANY_0022 = """CREATE OR REPLACE FUNCTION meter_commit_many(
    p_accounts text[], p_holds uuid[], p_reservations text[], p_inputs bigint[], p_outputs bigint[],
    p_clock_offset double precision, p_callers text[]
)
RETURNS TABLE (
    n integer, outcome text, reused_field text, charged bigint, cost bigint, unbilled bigint, late boolean,
    plan_id text, period_start timestamptz, period_end timestamptz, allowance_total bigint, debt bigint,
    warned smallint, allowance_remaining bigint, purchased_remaining bigint, allowance_held bigint,
    purchased_held bigint, used bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    v_n integer;
BEGIN
    PERFORM meter_lock_accounts(p_accounts);
    FOR v_n IN SELECT i FROM generate_subscripts(p_accounts, 1) AS i ORDER BY p_accounts[i], i LOOP
        RETURN QUERY SELECT v_n, r.* FROM meter_commit(p_accounts[v_n], p_holds[v_n], p_reservations[v_n],
            p_inputs[v_n], p_outputs[v_n], p_clock_offset, p_callers[v_n]) AS r;
    END LOOP;
END;
$$"""

METER_RESERVE_0021 = """CREATE OR REPLACE FUNCTION meter_reserve(
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

METER_RESERVE_MANY_0022 = """CREATE OR REPLACE FUNCTION meter_reserve_many(
    p_accounts text[], p_requests text[], p_holds uuid[], p_models text[], p_inputs bigint[],
    p_max_outputs bigint[], p_ttls integer[], p_labels jsonb[], p_catalog_versions text[],
    p_input_weights bigint[], p_output_weights bigint[], p_input_prices bigint[], p_output_prices bigint[],
    p_starts integer[], p_clock_offset double precision, p_plans text[], p_requests_per_minute bigint[],
    p_tokens_per_minute bigint[], p_concurrent_holds bigint[], p_wait_ms integer,
    p_sweep_seconds double precision
)
RETURNS TABLE (
    n integer, outcome text, hold_id uuid, held bigint, expires_at timestamptz, catalog_version text,
    status text, reused_field text, limit_name text, limit_value bigint, retry_after double precision,
    required bigint, across boolean, plan_id text, period_start timestamptz, period_end timestamptz,
    allowance_total bigint, debt bigint, warned smallint, allowance_remaining bigint,
    purchased_remaining bigint, allowance_held bigint, purchased_held bigint, used bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    v_n integer;
BEGIN
    PERFORM meter_lock_accounts(p_accounts);
    FOR v_n IN SELECT i FROM generate_subscripts(p_accounts, 1) AS i ORDER BY p_accounts[i], i LOOP
        RETURN QUERY SELECT v_n, r.* FROM meter_reserve(p_accounts[v_n], p_requests[v_n], p_holds[v_n],
            p_models[v_n], p_inputs[v_n], p_max_outputs[v_n], p_ttls[v_n], p_labels[v_n],
            p_catalog_versions[v_n], p_input_weights[v_n], p_output_weights[v_n], p_input_prices[v_n],
            p_output_prices[v_n], p_starts[v_n], p_clock_offset, p_plans, p_requests_per_minute,
            p_tokens_per_minute, p_concurrent_holds, p_wait_ms, p_sweep_seconds) AS r;
    END LOOP;
END;
$$"""

METER_CHARGE_USAGE_0030 = """CREATE OR REPLACE FUNCTION meter_charge_usage(
    p_account text, p_request text, p_hold uuid, p_reservation text, p_model text, p_input bigint,
    p_output bigint, p_labels jsonb, p_catalog_version text, p_input_weight bigint, p_output_weight bigint,
    p_input_price bigint, p_output_price bigint, p_clock_offset double precision, p_caller text
)
RETURNS TABLE (
    outcome text, hold_id uuid, reused_field text, charged bigint, cost bigint, unbilled bigint,
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
    v_counted bigint;
BEGIN
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF NOT FOUND THEN
        outcome := 'account_not_found';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.request_id = p_request FOR UPDATE;
    IF FOUND THEN
        reused_field := CASE
            WHEN v_hold.model <> p_model THEN 'model'
            WHEN v_hold.usage_input_tokens IS DISTINCT FROM p_input OR v_hold.status <> 'committed'
                THEN 'input_tokens'
            WHEN v_hold.usage_output_tokens <> p_output THEN 'output_tokens'
            WHEN v_hold.labels <> p_labels THEN 'labels'
        END;
        outcome := CASE WHEN reused_field IS NULL THEN 'replayed' ELSE 'request_reused' END;
    ELSIF v_account.period_end <= v_now THEN
        outcome := 'period_ended';
    ELSE
        outcome := 'committed';
        INSERT INTO holds AS h (account_id, hold_id, request_id, model, input_tokens, max_output_tokens,
            ttl_seconds, labels, catalog_version, input_weight, output_weight, input_price, output_price,
            allowance_held, allowance_bucket, purchased_held, purchased_bucket, period_start, status, created_at,
            expires_at)
        VALUES (p_account, p_hold, p_request, p_model, p_input, p_output, 1, p_labels, p_catalog_version,
            p_input_weight, p_output_weight, p_input_price, p_output_price, 0, 0, 0, 0, v_account.period_start,
            'open', v_now, v_now)
        RETURNING * INTO v_hold;
        v_hold.charged_tokens := meter_weighted_tokens(p_input, p_output, p_input_weight, p_output_weight);
        v_hold.cost_micros := meter_cost_micros(p_input, p_output, p_input_price, p_output_price);
        v_hold.usage_input_tokens := p_input;
        v_hold.usage_output_tokens := p_output;
        v_hold.late := false;
        v_settled := meter_settle(v_hold, v_account, v_hold.charged_tokens, 'committed', p_reservation, v_now,
            p_caller);
        v_hold.unbilled_tokens := v_settled.shortfall;
        v_account.debt := v_settled.debt;
        v_counted := meter_count_usage(v_hold, v_now);
    END IF;
    hold_id := v_hold.hold_id;
    IF outcome IN ('committed', 'replayed') THEN
        charged := v_hold.charged_tokens;
        cost := v_hold.cost_micros;
        unbilled := v_hold.unbilled_tokens;
    END IF;
    RETURN QUERY SELECT outcome, hold_id, reused_field, charged, cost, unbilled, b.*
        FROM meter_balance(v_account) AS b;
END;
$$"""


_CLASS_PRICING = (
    "cached_input_weight",
    "cache_write_weight",
    "reasoning_weight",
    "cached_input_price",
    "cache_write_price",
    "reasoning_price",
)
_CLASS_USAGE = ("cached_input_tokens", "cache_write_tokens", "reasoning_tokens")

# The functions whose arguments change: dropped, then created anew.
_OLD_SIGNATURES = (
    "meter_reserve_many(text[], text[], uuid[], text[], bigint[], bigint[], integer[], jsonb[], text[], bigint[], "
    "bigint[], bigint[], bigint[], integer[], double precision, text[], bigint[], bigint[], bigint[], integer, "
    "double precision)",
    "meter_reserve(text, text, uuid, text, bigint, bigint, integer, jsonb, text, bigint, bigint, bigint, bigint, "
    "integer, double precision, text[], bigint[], bigint[], bigint[], integer, double precision)",
    "meter_commit_many(text[], uuid[], text[], bigint[], bigint[], double precision, text[])",
    "meter_commit(text, uuid, text, bigint, bigint, double precision, text)",
    "meter_charge_usage(text, text, uuid, text, text, bigint, bigint, jsonb, text, bigint, bigint, bigint, bigint, "
    "double precision, text)",
    "meter_weighted_tokens(bigint, bigint, bigint, bigint)",
    "meter_cost_micros(bigint, bigint, bigint, bigint)",
)


# The view of committed calls (0006), with each call's token classes and summed labels after.
_USAGE_RECORDS = """CREATE OR REPLACE VIEW usage_records AS
SELECT account_id, account_id || '/' || replace(hold_id::text, '-', '') AS reservation_id, request_id,
    settled_at AS committed_at, model, catalog_version, usage_input_tokens AS input_tokens,
    usage_output_tokens AS output_tokens, charged_tokens, cost_micros, unbilled_tokens, late, labels,
    usage_cached_input_tokens AS cached_input_tokens, usage_cache_write_tokens AS cache_write_tokens,
    usage_reasoning_tokens AS reasoning_tokens, usage_labels
FROM holds WHERE status = 'committed'"""
_USAGE_RECORDS_0006 = """CREATE VIEW usage_records AS
SELECT account_id, account_id || '/' || replace(hold_id::text, '-', '') AS reservation_id, request_id,
    settled_at AS committed_at, model, catalog_version, usage_input_tokens AS input_tokens,
    usage_output_tokens AS output_tokens, charged_tokens, cost_micros, unbilled_tokens, late, labels
FROM holds WHERE status = 'committed'"""


def upgrade() -> None:
    for column in _CLASS_PRICING:
        op.execute(f"ALTER TABLE holds ADD COLUMN {column} bigint NOT NULL DEFAULT 0 CHECK ({column} >= 0)")
    for column in _CLASS_USAGE:
        op.execute(f"ALTER TABLE holds ADD COLUMN usage_{column} bigint NOT NULL DEFAULT 0")
    op.execute("ALTER TABLE holds ADD COLUMN usage_labels jsonb NOT NULL DEFAULT '{}'")
    op.execute(
        "UPDATE holds SET cached_input_weight = input_weight, cache_write_weight = input_weight, "
        "reasoning_weight = output_weight, cached_input_price = input_price, cache_write_price = input_price, "
        "reasoning_price = output_price WHERE status IN ('open', 'expired') OR charged_at_expiry"
    )
    for column in _CLASS_PRICING:  # every hold names them from now on
        op.execute(f"ALTER TABLE holds ALTER COLUMN {column} DROP DEFAULT")
    for column in _CLASS_USAGE:
        op.execute(f"ALTER TABLE usage_daily ADD COLUMN {column} bigint NOT NULL DEFAULT 0 CHECK ({column} >= 0)")
    op.execute("ALTER TABLE usage_daily ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'")
    op.execute("ALTER TABLE usage_daily DROP CONSTRAINT usage_daily_pkey")
    op.execute("ALTER TABLE usage_daily ADD PRIMARY KEY (account_id, day, model, labels, pool, bucket)")
    op.execute(_USAGE_RECORDS)
    for signature in _OLD_SIGNATURES:
        op.execute(f"DROP FUNCTION {signature}")
    for function in (
        METER_WEIGHTED_TOKENS,
        METER_COST_MICROS,
        METER_PRICED_USAGE,
        METER_SETTLE,
        METER_COUNT_USAGE,
        METER_CORRECT_EXPIRED,
        METER_EXPIRE,
        METER_COMMIT,
        METER_COMMIT_MANY,
        METER_RESERVE,
        METER_RESERVE_MANY,
        METER_CHARGE_USAGE,
    ):
        op.execute(function)


def downgrade() -> None:
    for name in (
        "meter_reserve_many",
        "meter_reserve",
        "meter_commit_many",
        "meter_commit",
        "meter_charge_usage",
        "meter_weighted_tokens",
        "meter_cost_micros",
        "meter_priced_usage",
    ):
        op.execute(f"DROP FUNCTION {name}")
    # The totals of one day, model, pool and row, whatever their labels, become one row again.
    op.execute(
        "CREATE TEMPORARY TABLE usage_daily_0030 ON COMMIT DROP AS SELECT account_id, day, model, pool, bucket, "
        "sum(requests) AS requests, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, "
        "sum(charged_tokens) AS charged_tokens, sum(cost_micros) AS cost_micros, "
        "sum(unbilled_tokens) AS unbilled_tokens FROM usage_daily GROUP BY 1, 2, 3, 4, 5"
    )
    op.execute("DELETE FROM usage_daily")
    op.execute("ALTER TABLE usage_daily DROP CONSTRAINT usage_daily_pkey")
    op.execute("ALTER TABLE usage_daily DROP COLUMN labels")
    for column in _CLASS_USAGE:
        op.execute(f"ALTER TABLE usage_daily DROP COLUMN {column}")
    op.execute("ALTER TABLE usage_daily ADD PRIMARY KEY (account_id, day, model, pool, bucket)")
    op.execute(
        "INSERT INTO usage_daily (account_id, day, model, pool, bucket, requests, input_tokens, output_tokens, "
        "charged_tokens, cost_micros, unbilled_tokens) SELECT * FROM usage_daily_0030"
    )
    op.execute("DROP VIEW usage_records")
    op.execute(_USAGE_RECORDS_0006)
    op.execute("ALTER TABLE holds DROP COLUMN usage_labels")
    for column in _CLASS_USAGE:
        op.execute(f"ALTER TABLE holds DROP COLUMN usage_{column}")
    for column in _CLASS_PRICING:
        op.execute(f"ALTER TABLE holds DROP COLUMN {column}")
    for function in (
        METER_WEIGHTED_TOKENS_0014,
        METER_COST_MICROS_0014,
        METER_SETTLE_0024,
        METER_COUNT_USAGE_0019,
        METER_CORRECT_EXPIRED_0029,
        METER_EXPIRE_0029,
        METER_COMMIT_0029,
        METER_COMMIT_MANY_0022,
        METER_RESERVE_0021,
        METER_RESERVE_MANY_0022,
        METER_CHARGE_USAGE_0030,
    ):
        op.execute(function)
