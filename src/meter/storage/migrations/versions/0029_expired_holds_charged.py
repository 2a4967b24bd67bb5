"""What an expired hold does, per plan (catalog: expired_holds) and per account (SetPlan):
'release' gives it back (as before), 'charge' charges its worst case as if committed with its
input and max output; a late Commit or Release then settles the difference once
(meter_correct_expired). accounts.expired_holds is the account's own choice (NULL: its plan's);
holds.charged_at_expiry marks a hold whose charge is the worst case still.

Frozen copies of src/meter/storage/sql/meter_correct_expired.sql, meter_expire.sql,
meter_commit.sql, meter_release.sql and meter_extend.sql as they are at this revision; the
downgrade installs the copies of 0014 (meter_extend), 0017 (meter_expire, meter_release) and 0019
(meter_commit).

Revision ID: 0029
Revises: 0028
Create Date: 2026-11-29
"""

from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

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
    ELSIF v_hold.charged_at_expiry AND v_account.period_end > v_now THEN
        outcome := 'released';  -- charged its worst case at expiry: the call used nothing
        v_settled := meter_correct_expired(v_hold, v_account, 'released', p_reservation, v_now, p_caller);
        v_account.debt := v_settled.debt;
    ELSIF v_hold.charged_at_expiry THEN
        outcome := 'period_ended';
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
    ELSIF v_hold.charged_at_expiry THEN
        outcome := 'expired';
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

METER_EXPIRE_0017 = """CREATE OR REPLACE FUNCTION meter_expire(
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

METER_COMMIT_0019 = """CREATE OR REPLACE FUNCTION meter_commit(
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

METER_RELEASE_0017 = """CREATE OR REPLACE FUNCTION meter_release(
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

METER_EXTEND_0014 = """CREATE OR REPLACE FUNCTION meter_extend(
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


def upgrade() -> None:
    op.execute("ALTER TABLE accounts ADD COLUMN expired_holds text CHECK (expired_holds IN ('release', 'charge'))")
    op.execute("ALTER TABLE holds ADD COLUMN charged_at_expiry boolean NOT NULL DEFAULT false")
    op.execute(METER_CORRECT_EXPIRED)
    op.execute("DROP FUNCTION meter_expire(text, uuid, text, double precision, text)")
    op.execute(METER_EXPIRE)
    op.execute(METER_COMMIT)
    op.execute(METER_RELEASE)
    op.execute(METER_EXTEND)


def downgrade() -> None:
    op.execute(METER_EXTEND_0014)
    op.execute(METER_RELEASE_0017)
    op.execute(METER_COMMIT_0019)
    op.execute("DROP FUNCTION meter_expire(text, uuid, text, boolean, double precision, text)")
    op.execute(METER_EXPIRE_0017)
    op.execute("DROP FUNCTION meter_correct_expired")
    op.execute("ALTER TABLE holds DROP COLUMN charged_at_expiry")
    op.execute("ALTER TABLE accounts DROP COLUMN expired_holds")
