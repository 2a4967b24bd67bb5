"""meter_credit: a credit pays the debt first and is spread over the pool's rows, decided in the
database like every other movement of tokens (meter_pay_debt, meter_spread), instead of a second
implementation of those two rules in Python.

A frozen copy of src/meter/storage/sql/meter_credit.sql as it is at this revision.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-28
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

METER_CREDIT = """CREATE OR REPLACE FUNCTION meter_credit(
    p_account text, p_kind text, p_pool text, p_amount bigint, p_ref text, p_note text, p_now timestamptz,
    p_caller text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_left bigint;
BEGIN
    INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, ref, note)
    VALUES (p_account, p_now, p_caller, p_kind, p_pool, p_amount, p_ref, p_note);
    SELECT d.allowance_left + d.purchased_left INTO v_left
    FROM meter_pay_debt(p_account, CASE WHEN p_pool = 'allowance' THEN p_amount ELSE 0 END,
        CASE WHEN p_pool = 'purchased' THEN p_amount ELSE 0 END, p_ref, NULL, p_now, p_caller) AS d;
    PERFORM meter_lock_buckets(p_account);
    PERFORM meter_spread(p_account, p_pool, v_left + (
        SELECT coalesce(sum(b.available), 0)::bigint FROM buckets AS b
        WHERE b.account_id = p_account AND b.pool = p_pool
    ));
    RETURN p_amount - v_left;
END;
$$"""


def upgrade() -> None:
    op.execute(METER_CREDIT)


def downgrade() -> None:
    op.execute("DROP FUNCTION meter_credit")
