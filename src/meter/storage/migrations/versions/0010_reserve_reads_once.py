"""meter_reserve_fast reads an account's rows once when it has limits, and says it checked them.

Measured after 0008 (`meter bench`, hot account): with limits on, each Reserve read the
account's rows twice (the counts before the hold, the balance after it) and a Reserve handed to
the general path had its limits read and checked again there; the hot account lost about a
tenth of its throughput to that (0.898 of the same account without limits). Now the one read
before the hold also takes the balance sums, the balance returned is those sums with this
Reserve's own change, and the outcome says whether the limits were checked and passed
('checked'), so the general path does not check them again (it still does after 'slow', when the
function gave up before checking, and after 'limited', to refuse with the limit and a delay).

Every statement is frozen here in full, as it ran when this migration was written: no
migration imports or edits another's text.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UPGRADE = (
    """
CREATE OR REPLACE FUNCTION meter_reserve_fast(
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
    v_checked boolean := false;
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
$$
""",
)

DOWNGRADE = (
    """
CREATE OR REPLACE FUNCTION meter_reserve_fast(
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
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
