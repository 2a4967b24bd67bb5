"""Budgets under an account (issue 21): a cap on what the calls labelled with one label value may
use each period of the account, in charged tokens or provider cost, counted like a balance over
rows (budget_buckets) so that busy calls do not queue on one. Reserve holds a call's worst case
against each budget its labels match (meter_hold_budgets) and refuses it, the balance untouched,
when one has not got it; every way a hold ends counts it (meter_settle_budgets, from meter_settle
and meter_correct_expired); ChargeUsage counts its call. holds.budget_ids, budget_buckets and
budget_held are a hold's parts; accounts.budget_count spares the calls of accounts without budgets
a query. A budget starts again when its account enters a new period
(meter_current_budgets).

Frozen copies of src/meter/storage/sql/meter_lock_budget_rows.sql, meter_spread_budget.sql,
meter_current_budgets.sql, meter_settle_budgets.sql, meter_hold_budgets.sql, meter_set_budget.sql,
meter_delete_budget.sql, meter_settle.sql, meter_correct_expired.sql, meter_reserve.sql, meter_reserve_many.sql and
meter_charge_usage.sql as they are at this revision; the downgrade installs the copies of 0031.

Revision ID: 0032
Revises: 0031
Create Date: 2026-11-29
"""

from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None

METER_LOCK_BUDGET_ROWS = """CREATE OR REPLACE FUNCTION meter_lock_budget_rows(p_account text, p_budget bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_total bigint;
BEGIN
    SELECT coalesce(sum(r.available), 0) INTO v_total
    FROM (
        SELECT b.available FROM budget_buckets AS b
        WHERE b.account_id = p_account AND b.budget_id = p_budget ORDER BY b.bucket FOR UPDATE
    ) AS r;
    RETURN v_total;
END;
$$"""

METER_SPREAD_BUDGET = """CREATE OR REPLACE FUNCTION meter_spread_budget(p_account text, p_budget bigint, p_total bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_rows bigint;
BEGIN
    SELECT count(*) INTO v_rows FROM budget_buckets AS b WHERE b.account_id = p_account AND b.budget_id = p_budget;
    UPDATE budget_buckets AS b SET available = CASE
        WHEN p_total < 0 THEN CASE WHEN b.bucket = 0 THEN p_total ELSE 0 END
        ELSE p_total / v_rows + CASE WHEN b.bucket = 0 THEN p_total % v_rows ELSE 0 END
    END
    WHERE b.account_id = p_account AND b.budget_id = p_budget;
END;
$$"""

METER_CURRENT_BUDGETS = """CREATE OR REPLACE FUNCTION meter_current_budgets(p_account text, p_labels jsonb, p_period_start timestamptz)
RETURNS SETOF budgets LANGUAGE plpgsql AS $$
DECLARE
    v_budget budgets%ROWTYPE;
BEGIN
    FOR v_budget IN
        SELECT g.* FROM jsonb_each_text(p_labels) AS l (key, value)
        JOIN budgets AS g ON g.account_id = p_account AND g.label_key = l.key AND g.label_value = l.value
        ORDER BY g.budget_id
    LOOP
        IF v_budget.period_start <> p_period_start THEN
            SELECT * INTO v_budget FROM budgets AS g
            WHERE g.account_id = p_account AND g.budget_id = v_budget.budget_id FOR UPDATE;
            IF v_budget.period_start <> p_period_start THEN
                PERFORM meter_lock_budget_rows(p_account, v_budget.budget_id);
                UPDATE budget_buckets AS b SET held = 0, used = 0, period_start = p_period_start
                WHERE b.account_id = p_account AND b.budget_id = v_budget.budget_id;
                PERFORM meter_spread_budget(p_account, v_budget.budget_id, v_budget.cap);
                UPDATE budgets AS g SET period_start = p_period_start, updated_at = now()
                WHERE g.account_id = p_account AND g.budget_id = v_budget.budget_id
                RETURNING * INTO v_budget;
            END IF;
        END IF;
        RETURN NEXT v_budget;
    END LOOP;
END;
$$"""

METER_SETTLE_BUDGETS = """CREATE OR REPLACE FUNCTION meter_settle_budgets(
    p_account text, p_period_start timestamptz, p_ids bigint[], p_buckets smallint[], p_held bigint[],
    p_parked boolean, p_tokens bigint, p_cost bigint
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_i integer;
    v_held bigint;
    v_unit text;
    v_used bigint;
    v_total bigint;
BEGIN
    FOR v_i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        v_held := CASE WHEN p_parked THEN p_held[v_i] ELSE 0 END;
        UPDATE budget_buckets AS b SET held = b.held - v_held,
            used = b.used + CASE WHEN b.unit = 'tokens' THEN p_tokens ELSE p_cost END,
            available = b.available + v_held - CASE WHEN b.unit = 'tokens' THEN p_tokens ELSE p_cost END
        WHERE b.account_id = p_account AND b.budget_id = p_ids[v_i] AND b.bucket = p_buckets[v_i]
          AND b.period_start = p_period_start AND CASE WHEN b.unit = 'tokens' THEN p_tokens ELSE p_cost END <= v_held;
        CONTINUE WHEN FOUND;
        SELECT b.unit INTO v_unit FROM budget_buckets AS b
        WHERE b.account_id = p_account AND b.budget_id = p_ids[v_i] AND b.bucket = p_buckets[v_i]
          AND b.period_start = p_period_start;
        CONTINUE WHEN NOT FOUND;  -- deleted, or counting another period
        v_used := CASE WHEN v_unit = 'tokens' THEN p_tokens ELSE p_cost END;
        v_total := meter_lock_budget_rows(p_account, p_ids[v_i]);
        PERFORM FROM budget_buckets AS b
        WHERE b.account_id = p_account AND b.budget_id = p_ids[v_i] AND b.bucket = p_buckets[v_i]
          AND b.period_start = p_period_start;
        CONTINUE WHEN NOT FOUND;  -- it started a new period while this waited for its rows
        PERFORM meter_spread_budget(p_account, p_ids[v_i], v_total + v_held - v_used);
        UPDATE budget_buckets AS b SET held = b.held - v_held, used = b.used + v_used
        WHERE b.account_id = p_account AND b.budget_id = p_ids[v_i] AND b.bucket = p_buckets[v_i];
    END LOOP;
END;
$$"""

METER_HOLD_BUDGETS = """CREATE OR REPLACE FUNCTION meter_hold_budgets(
    p_account text, p_labels jsonb, p_period_start timestamptz, p_tokens bigint, p_cost bigint, p_start integer,
    OUT budget_ids bigint[], OUT budget_buckets smallint[], OUT budget_held bigint[], OUT refused_key text,
    OUT refused_value text, OUT refused_unit text, OUT refused_cap bigint, OUT refused_remaining bigint,
    OUT refused_required bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_budget budgets%ROWTYPE;
    v_amount bigint;
    v_first smallint;
    v_bucket smallint;
    v_total bigint;
BEGIN
    FOR v_budget IN SELECT * FROM meter_current_budgets(p_account, p_labels, p_period_start) LOOP
        v_amount := CASE WHEN v_budget.unit = 'tokens' THEN p_tokens ELSE p_cost END;
        v_first := p_start % v_budget.bucket_count;
        WITH pick AS MATERIALIZED (
            SELECT b.bucket FROM budget_buckets AS b
            WHERE b.account_id = p_account AND b.budget_id = v_budget.budget_id AND b.available >= v_amount
            ORDER BY (b.bucket + v_budget.bucket_count - v_first) % v_budget.bucket_count
            LIMIT 1 FOR UPDATE SKIP LOCKED
        )
        UPDATE budget_buckets AS b SET available = b.available - v_amount, held = b.held + v_amount
        FROM pick WHERE b.account_id = p_account AND b.budget_id = v_budget.budget_id AND b.bucket = pick.bucket
        RETURNING b.bucket INTO v_bucket;
        IF v_bucket IS NULL THEN
            v_total := meter_lock_budget_rows(p_account, v_budget.budget_id);
            IF v_total < v_amount THEN
                PERFORM meter_settle_budgets(p_account, p_period_start, budget_ids, budget_buckets, budget_held, true,
                    0, 0);
                refused_key := v_budget.label_key;
                refused_value := v_budget.label_value;
                refused_unit := v_budget.unit;
                refused_cap := v_budget.cap;
                refused_remaining := greatest(v_total, 0);
                refused_required := v_amount;
                budget_ids := NULL;
                budget_buckets := NULL;
                budget_held := NULL;
                RETURN;
            END IF;
            PERFORM meter_spread_budget(p_account, v_budget.budget_id, v_total - v_amount);
            UPDATE budget_buckets AS b SET held = b.held + v_amount
            WHERE b.account_id = p_account AND b.budget_id = v_budget.budget_id AND b.bucket = v_first;
            v_bucket := v_first;
        END IF;
        budget_ids := array_append(budget_ids, v_budget.budget_id);
        budget_buckets := array_append(budget_buckets, v_bucket);
        budget_held := array_append(budget_held, v_amount);
    END LOOP;
END;
$$"""

METER_SET_BUDGET = """CREATE OR REPLACE FUNCTION meter_set_budget(
    p_account text, p_key text, p_value text, p_unit text, p_cap bigint, OUT outcome text, OUT budget budgets
) LANGUAGE plpgsql AS $$
DECLARE
    v_account accounts%ROWTYPE;
    v_total bigint;
BEGIN
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF NOT FOUND THEN
        outcome := 'account_not_found';
        RETURN;
    END IF;
    INSERT INTO budgets AS g (account_id, label_key, label_value, unit, cap, bucket_count, period_start, created_at,
        updated_at)
    VALUES (p_account, p_key, p_value, p_unit, p_cap, v_account.bucket_count, v_account.period_start, now(), now())
    ON CONFLICT (account_id, label_key, label_value) DO NOTHING
    RETURNING * INTO budget;
    IF FOUND THEN
        INSERT INTO budget_buckets (account_id, budget_id, bucket, unit, period_start, available, held, used)
        SELECT p_account, budget.budget_id, n, p_unit, v_account.period_start, 0, 0, 0
        FROM generate_series(0, v_account.bucket_count - 1) AS n;
        PERFORM meter_spread_budget(p_account, budget.budget_id, p_cap);
        UPDATE accounts AS a SET budget_count = a.budget_count + 1 WHERE a.account_id = p_account;
        outcome := 'created';
        RETURN;
    END IF;
    SELECT * INTO budget FROM budgets AS g
    WHERE g.account_id = p_account AND g.label_key = p_key AND g.label_value = p_value FOR UPDATE;
    IF budget.unit <> p_unit THEN
        outcome := 'unit_changed';
        RETURN;
    END IF;
    v_total := meter_lock_budget_rows(p_account, budget.budget_id);
    IF budget.period_start <> v_account.period_start THEN
        UPDATE budget_buckets AS b SET held = 0, used = 0, period_start = v_account.period_start
        WHERE b.account_id = p_account AND b.budget_id = budget.budget_id;
        v_total := p_cap;
    ELSE
        v_total := v_total + p_cap - budget.cap;
    END IF;
    PERFORM meter_spread_budget(p_account, budget.budget_id, v_total);
    UPDATE budgets AS g SET cap = p_cap, period_start = v_account.period_start, updated_at = now()
    WHERE g.account_id = p_account AND g.budget_id = budget.budget_id
    RETURNING * INTO budget;
    outcome := 'changed';
END;
$$"""

METER_DELETE_BUDGET = """CREATE OR REPLACE FUNCTION meter_delete_budget(p_account text, p_key text, p_value text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM budgets AS g WHERE g.account_id = p_account AND g.label_key = p_key AND g.label_value = p_value;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE accounts AS a SET budget_count = a.budget_count - 1 WHERE a.account_id = p_account;
    RETURN true;
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
    IF p_hold.budget_ids IS NOT NULL THEN
        PERFORM meter_settle_budgets(p_hold.account_id, p_hold.period_start, p_hold.budget_ids, p_hold.budget_buckets,
            p_hold.budget_held, v_parked, p_charge, CASE WHEN p_status = 'committed' THEN p_hold.cost_micros ELSE 0 END);
    END IF;
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
    IF p_hold.budget_ids IS NOT NULL THEN
        PERFORM meter_settle_budgets(p_hold.account_id, p_hold.period_start, p_hold.budget_ids, p_hold.budget_buckets,
            p_hold.budget_held, false, v_delta,
            CASE WHEN v_released THEN 0 ELSE p_hold.cost_micros END - v_old.cost_micros);
    END IF;
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
    purchased_held bigint, used bigint, budget_key text, budget_value text, budget_unit text, budget_cap bigint,
    budget_remaining bigint, budget_required bigint
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
    v_budget_ids bigint[];  -- the hold's parts of its budgets (meter_hold_budgets)
    v_budget_buckets smallint[];
    v_budget_held bigint[];
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
    -- The account's count of budgets, read with it, spares the calls of accounts without any a
    -- query (a condition with a subquery is run as a statement, not as a simple expression).
    IF outcome IS NULL AND p_labels <> '{}' AND v_account.budget_count > 0 THEN
        SELECT h.budget_ids, h.budget_buckets, h.budget_held, h.refused_key, h.refused_value, h.refused_unit,
            h.refused_cap, h.refused_remaining, h.refused_required
        INTO v_budget_ids, v_budget_buckets, v_budget_held, budget_key, budget_value, budget_unit, budget_cap,
            budget_remaining, budget_required
        FROM meter_hold_budgets(p_account, p_labels, v_account.period_start, required,
            meter_cost_micros(p_input, 0, 0, p_max_output, 0, p_input_price, 0, 0,
                greatest(p_output_price, p_reasoning_price), 0), p_start) AS h;
        IF budget_key IS NOT NULL THEN
            outcome := 'budget_exceeded';
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
                IF v_budget_ids IS NOT NULL THEN  -- what the budgets held goes back
                    PERFORM meter_settle_budgets(p_account, v_account.period_start, v_budget_ids, v_budget_buckets,
                        v_budget_held, true, 0, 0);
                END IF;
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
            reasoning_price, usage_labels, budget_ids, budget_buckets, budget_held, allowance_held, allowance_bucket,
            purchased_held, purchased_bucket, period_start, status, created_at, expires_at)
        VALUES (p_account, p_hold, p_request, p_model, p_input, p_max_output, p_ttl, p_labels, p_catalog_version,
            p_input_weight, p_output_weight, p_input_price, p_output_price, p_cached_input_weight,
            p_cache_write_weight, p_reasoning_weight, p_cached_input_price, p_cache_write_price, p_reasoning_price,
            p_usage_labels, v_budget_ids, v_budget_buckets, v_budget_held, v_allowance,
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
        limit_value, retry_after, required, coalesce(across, false), b.*, budget_key, budget_value, budget_unit,
        budget_cap, budget_remaining, budget_required FROM meter_balance(v_account) AS b;
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
    purchased_remaining bigint, allowance_held bigint, purchased_held bigint, used bigint, budget_key text,
    budget_value text, budget_unit text, budget_cap bigint, budget_remaining bigint, budget_required bigint
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
    v_budget_ids bigint[];  -- the budgets it counts against, with nothing held on their rows
    v_budget_buckets smallint[];
    v_budget_held bigint[];
BEGIN
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF NOT FOUND THEN
        outcome := 'account_not_found';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.request_id = p_request FOR UPDATE;
    IF FOUND AND v_hold.model = p_model AND v_hold.labels = p_labels
        AND (v_hold.status IN ('open', 'expired') OR v_hold.charged_at_expiry) THEN
        -- The Reserve of this call did land, though its caller never had the answer (meter could
        -- not be reached, and the call was let through): the call is that hold's Commit.
        RETURN QUERY SELECT c.outcome, v_hold.hold_id, c.reused_field, c.charged, c.cost, c.unbilled, c.plan_id,
            c.period_start, c.period_end, c.allowance_total, c.debt, c.warned, c.allowance_remaining,
            c.purchased_remaining, c.allowance_held, c.purchased_held, c.used
        FROM meter_commit(p_account, v_hold.hold_id, p_account || '/' || replace(CAST(v_hold.hold_id AS text), '-', ''),
            p_input, p_output, p_cached_input, p_cache_write, p_reasoning, p_clock_offset, p_caller) AS c;
        RETURN;
    ELSIF FOUND THEN
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
        IF p_labels <> '{}' AND v_account.budget_count > 0 THEN
            SELECT array_agg(g.budget_id ORDER BY g.budget_id), array_agg(CAST(0 AS smallint)),
                array_agg(CAST(0 AS bigint))
            INTO v_budget_ids, v_budget_buckets, v_budget_held
            FROM meter_current_budgets(p_account, p_labels, v_account.period_start) AS g;
        END IF;
        INSERT INTO holds AS h (account_id, hold_id, request_id, model, input_tokens, max_output_tokens,
            ttl_seconds, labels, catalog_version, input_weight, output_weight, input_price, output_price,
            cached_input_weight, cache_write_weight, reasoning_weight, cached_input_price, cache_write_price,
            reasoning_price, usage_labels, budget_ids, budget_buckets, budget_held, allowance_held, allowance_bucket,
            purchased_held, purchased_bucket, period_start, status, created_at, expires_at)
        VALUES (p_account, p_hold, p_request, p_model, p_input, p_output, 1, p_labels, p_catalog_version,
            p_input_weight, p_output_weight, p_input_price, p_output_price, p_cached_input_weight,
            p_cache_write_weight, p_reasoning_weight, p_cached_input_price, p_cache_write_price, p_reasoning_price,
            p_usage_labels, v_budget_ids, v_budget_buckets, v_budget_held, 0, 0, 0, 0, v_account.period_start, 'open',
            v_now, v_now)
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

METER_SETTLE_0031 = """CREATE OR REPLACE FUNCTION meter_settle(
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

METER_CORRECT_EXPIRED_0031 = """CREATE OR REPLACE FUNCTION meter_correct_expired(
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

METER_RESERVE_0031 = """CREATE OR REPLACE FUNCTION meter_reserve(
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

METER_RESERVE_MANY_0031 = """CREATE OR REPLACE FUNCTION meter_reserve_many(
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

METER_CHARGE_USAGE_0031 = """CREATE OR REPLACE FUNCTION meter_charge_usage(
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


_BUDGETS = """CREATE TABLE budgets (
    account_id text NOT NULL REFERENCES accounts (account_id),
    budget_id bigint GENERATED ALWAYS AS IDENTITY,
    label_key text NOT NULL CHECK (length(label_key) BETWEEN 1 AND 256),
    label_value text NOT NULL CHECK (length(label_value) BETWEEN 1 AND 256),
    unit text NOT NULL CHECK (unit IN ('tokens', 'cost_micros')),
    cap bigint NOT NULL CHECK (cap >= 0),
    bucket_count smallint NOT NULL CHECK (bucket_count BETWEEN 1 AND 1024),
    period_start timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (account_id, budget_id),
    UNIQUE (account_id, label_key, label_value)
)"""

# A budget's rows: what is available may go below zero on row 0 (usage beyond the holds). Each
# row also carries its budget's unit and the period it counts, so that settling a call is one
# statement on the row.
_BUDGET_BUCKETS = """CREATE TABLE budget_buckets (
    account_id text NOT NULL,
    budget_id bigint NOT NULL,
    bucket smallint NOT NULL,
    unit text NOT NULL CHECK (unit IN ('tokens', 'cost_micros')),
    period_start timestamptz NOT NULL,
    available bigint NOT NULL,
    held bigint NOT NULL CHECK (held >= 0),
    used bigint NOT NULL CHECK (used >= 0),
    PRIMARY KEY (account_id, budget_id, bucket),
    FOREIGN KEY (account_id, budget_id) REFERENCES budgets (account_id, budget_id) ON DELETE CASCADE
)"""

# meter_reserve answers with more columns (the budget a refusal names): its callers are recreated.
_OLD_SIGNATURES = (
    "meter_reserve_many(text[], text[], uuid[], text[], bigint[], bigint[], integer[], jsonb[], text[], bigint[], "
    "bigint[], bigint[], bigint[], bigint[], bigint[], bigint[], bigint[], bigint[], bigint[], jsonb[], integer[], "
    "double precision, text[], bigint[], bigint[], bigint[], integer, double precision)",
    "meter_reserve(text, text, uuid, text, bigint, bigint, integer, jsonb, text, bigint, bigint, bigint, bigint, "
    "bigint, bigint, bigint, bigint, bigint, bigint, jsonb, integer, double precision, text[], bigint[], bigint[], "
    "bigint[], integer, double precision)",
)


def upgrade() -> None:
    op.execute(_BUDGETS)
    op.execute(_BUDGET_BUCKETS)
    op.execute("ALTER TABLE accounts ADD COLUMN budget_count integer NOT NULL DEFAULT 0 CHECK (budget_count >= 0)")
    op.execute(
        "ALTER TABLE holds ADD COLUMN budget_ids bigint[], ADD COLUMN budget_buckets smallint[], "
        "ADD COLUMN budget_held bigint[]"
    )
    for signature in _OLD_SIGNATURES:
        op.execute(f"DROP FUNCTION {signature}")
    for function in (
        METER_LOCK_BUDGET_ROWS,
        METER_SPREAD_BUDGET,
        METER_CURRENT_BUDGETS,
        METER_SETTLE_BUDGETS,
        METER_HOLD_BUDGETS,
        METER_SET_BUDGET,
        METER_DELETE_BUDGET,
        METER_SETTLE,
        METER_CORRECT_EXPIRED,
        METER_RESERVE,
        METER_RESERVE_MANY,
        METER_CHARGE_USAGE,
    ):
        op.execute(function)


def downgrade() -> None:
    op.execute("DROP FUNCTION meter_reserve_many")
    op.execute("DROP FUNCTION meter_reserve")
    for name in (
        "meter_delete_budget",
        "meter_set_budget",
        "meter_hold_budgets",
        "meter_settle_budgets",
        "meter_current_budgets",
        "meter_spread_budget",
        "meter_lock_budget_rows",
    ):
        op.execute(f"DROP FUNCTION {name}")
    op.execute("ALTER TABLE holds DROP COLUMN budget_ids, DROP COLUMN budget_buckets, DROP COLUMN budget_held")
    op.execute("DROP TABLE budget_buckets")
    op.execute("DROP TABLE budgets")
    op.execute("ALTER TABLE accounts DROP COLUMN budget_count")
    for function in (
        METER_SETTLE_0031,
        METER_CORRECT_EXPIRED_0031,
        METER_RESERVE_0031,
        METER_RESERVE_MANY_0031,
        METER_CHARGE_USAGE_0031,
    ):
        op.execute(function)
