"""Budgets bounded (issue 34): SetBudget at the largest cap, twice, overflowed (the new available
was computed as available + new cap - old cap, and available + new cap passes 2^63 - 1); and a
budget with nothing left (a cap of 0, or usage past its cap) admitted a call that costs nothing (a
model priced at 0 under a cost budget), where the contract says it refuses every call.

Frozen copies of src/meter/storage/sql/meter_set_budget.sql and meter_hold_budgets.sql as they are
at this revision; the downgrade installs 0032's.

Revision ID: 0037
Revises: 0036
Create Date: 2026-12-07
"""

from alembic import op

revision = "0037"
down_revision = "0036"
branch_labels = None
depends_on = None

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
        v_total := v_total + (p_cap - budget.cap);  -- the change first: v_total + p_cap may pass 2^63 - 1
    END IF;
    PERFORM meter_spread_budget(p_account, budget.budget_id, v_total);
    UPDATE budgets AS g SET cap = p_cap, period_start = v_account.period_start, updated_at = now()
    WHERE g.account_id = p_account AND g.budget_id = budget.budget_id
    RETURNING * INTO budget;
    outcome := 'changed';
END;
$$;"""

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
            WHERE b.account_id = p_account AND b.budget_id = v_budget.budget_id AND b.available >= greatest(v_amount, 1)
            ORDER BY (b.bucket + v_budget.bucket_count - v_first) % v_budget.bucket_count
            LIMIT 1 FOR UPDATE SKIP LOCKED
        )
        UPDATE budget_buckets AS b SET available = b.available - v_amount, held = b.held + v_amount
        FROM pick WHERE b.account_id = p_account AND b.budget_id = v_budget.budget_id AND b.bucket = pick.bucket
        RETURNING b.bucket INTO v_bucket;
        IF v_bucket IS NULL THEN
            v_total := meter_lock_budget_rows(p_account, v_budget.budget_id);
            IF v_total < greatest(v_amount, 1) THEN
                PERFORM meter_settle_budgets(p_account, p_period_start, budget_ids, budget_buckets, budget_held, true,
                    0, 0);
                refused_key := v_budget.label_key;
                refused_value := v_budget.label_value;
                refused_unit := v_budget.unit;
                refused_cap := v_budget.cap;
                refused_remaining := greatest(v_total, 0);
                refused_required := greatest(v_amount, 1);
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
$$;"""

METER_SET_BUDGET_0032 = """CREATE OR REPLACE FUNCTION meter_set_budget(
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

METER_HOLD_BUDGETS_0032 = """CREATE OR REPLACE FUNCTION meter_hold_budgets(
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


def upgrade() -> None:
    op.execute(METER_SET_BUDGET)
    op.execute(METER_HOLD_BUDGETS)


def downgrade() -> None:
    op.execute(METER_SET_BUDGET_0032)
    op.execute(METER_HOLD_BUDGETS_0032)
