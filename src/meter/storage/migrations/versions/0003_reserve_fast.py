"""meter_reserve_fast: the common Reserve in one statement (one round trip, no BEGIN/COMMIT).

It handles only the plain case (the account exists in its current period, owes nothing, the
request_id is new, one bucket holds the amount) and otherwise changes nothing and answers
'slow', leaving every other case to the service's general path. A concurrent Reserve with the
same request_id makes it fail with serialization_failure, which the service retries.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FUNCTION = """
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
"""


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION meter_reserve_fast")
