"""The debt's facts: 'debt.created' when an account comes to owe tokens, 'debt.cleared' when it
owes nothing again, each told once per crossing (accounts.debt_announced remembers what was told;
accounts already in debt count as told). meter_debt_events decides them; meter_settle calls it when
it changed the debt, meter_credit when it paid debt, a reversal at its end.

Frozen copies of src/meter/storage/sql/meter_debt_events.sql, meter_settle.sql and meter_credit.sql
as they are at this revision; the downgrade installs the copies of 0017 (meter_settle) and 0015
(meter_credit).

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-28
"""

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

EVENT_TYPES = "'purchase.credited', 'credit.reversed', 'dispute.won', 'allowance.granted', 'allowance.expired', 'plan.changed', 'plan.cancelled', 'balance.warning', 'balance.adjusted', 'debt.created', 'debt.cleared'"
EVENT_TYPES_0023 = "'purchase.credited', 'credit.reversed', 'dispute.won', 'allowance.granted', 'allowance.expired', 'plan.changed', 'plan.cancelled', 'balance.warning', 'balance.adjusted'"

METER_DEBT_EVENTS = """CREATE OR REPLACE FUNCTION meter_debt_events(p_account text, p_ref text, p_now timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_account accounts%ROWTYPE;
BEGIN
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF v_account.debt > 0 AND NOT v_account.debt_announced THEN
        UPDATE accounts AS a SET debt_announced = true WHERE a.account_id = p_account;
        PERFORM meter_emit(p_account, 'debt.created', jsonb_build_object('debt', v_account.debt, 'ref', p_ref),
            p_now);
    ELSIF v_account.debt = 0 AND v_account.debt_announced THEN
        UPDATE accounts AS a SET debt_announced = false WHERE a.account_id = p_account;
        PERFORM meter_emit(p_account, 'debt.cleared', jsonb_build_object('ref', p_ref), p_now);
    END IF;
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
    IF v_left < p_amount THEN
        PERFORM meter_debt_events(p_account, p_ref, p_now);
    END IF;
    RETURN p_amount - v_left;
END;
$$"""

METER_SETTLE_0017 = """CREATE OR REPLACE FUNCTION meter_settle(
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

METER_CREDIT_0015 = """CREATE OR REPLACE FUNCTION meter_credit(
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
    op.execute("ALTER TABLE accounts ADD COLUMN debt_announced boolean NOT NULL DEFAULT false")
    op.execute("UPDATE accounts SET debt_announced = true WHERE debt > 0")
    op.execute("ALTER TABLE balance_events DROP CONSTRAINT balance_events_type_check")
    op.execute(f"ALTER TABLE balance_events ADD CONSTRAINT balance_events_type_check CHECK (type IN ({EVENT_TYPES}))")
    op.execute(METER_DEBT_EVENTS)
    op.execute(METER_SETTLE)
    op.execute(METER_CREDIT)


def downgrade() -> None:
    op.execute(METER_CREDIT_0015)
    op.execute(METER_SETTLE_0017)
    op.execute("DROP FUNCTION meter_debt_events")
    op.execute("DELETE FROM balance_events WHERE type IN ('debt.created', 'debt.cleared')")
    op.execute("ALTER TABLE balance_events DROP CONSTRAINT balance_events_type_check")
    op.execute(
        f"ALTER TABLE balance_events ADD CONSTRAINT balance_events_type_check CHECK (type IN ({EVENT_TYPES_0023}))"
    )
    op.execute("ALTER TABLE accounts DROP COLUMN debt_announced")
