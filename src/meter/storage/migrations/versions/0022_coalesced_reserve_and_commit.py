"""Coalescing: meter_reserve_many and meter_commit_many run the Reserves (and the Commits) that
arrived while another call was in flight, in one transaction and one round trip. Each runs the
single-call function (meter_reserve, meter_commit) for every call of the batch, in one global order
(account, then arrival): the rules stay in one place. meter_lock_accounts makes the batches of an
account run one after the other (a batch may lock one account's rows in another order than a call).

Frozen copies of src/meter/storage/sql/meter_lock_accounts.sql, meter_reserve_many.sql and
meter_commit_many.sql as they are at this revision; the downgrade drops them.

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-28
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

METER_LOCK_ACCOUNTS = """CREATE OR REPLACE FUNCTION meter_lock_accounts(p_accounts text[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_key integer;
BEGIN
    FOR v_key IN SELECT DISTINCT hashtext(a) AS k FROM unnest(p_accounts) AS a ORDER BY k LOOP
        PERFORM pg_advisory_xact_lock(2026, v_key);
    END LOOP;
END;
$$"""

METER_RESERVE_MANY = """CREATE OR REPLACE FUNCTION meter_reserve_many(
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

METER_COMMIT_MANY = """CREATE OR REPLACE FUNCTION meter_commit_many(
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


def upgrade() -> None:
    op.execute(METER_LOCK_ACCOUNTS)
    op.execute(METER_RESERVE_MANY)
    op.execute(METER_COMMIT_MANY)


def downgrade() -> None:
    op.execute("DROP FUNCTION meter_commit_many")
    op.execute("DROP FUNCTION meter_reserve_many")
    op.execute("DROP FUNCTION meter_lock_accounts")
