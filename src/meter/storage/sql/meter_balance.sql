-- An account's balance: its plan, allowance month and paid-through date from its row
-- (p_account, as the caller read it), and the sums of its bucket rows in one read: the month's
-- allowance, purchased tokens, and what its own grants have (granted_*). What
-- GetBalance shows and what every change of the hot path answers with; taking the row it already
-- holds spares each call a second read of it. Its shape (meter_balance_row) is the
-- one column every hot-path answer carries it in. A set of one row, so that a query's FROM inlines
-- it (a scalar call of an SQL function with a FROM is planned anew each time).
CREATE OR REPLACE FUNCTION meter_balance(p_account accounts)
RETURNS SETOF meter_balance_row LANGUAGE sql STABLE AS $$
    SELECT p_account.plan_id, p_account.period_start, p_account.period_end, p_account.paid_through,
        p_account.allowance_total,
        p_account.debt,
        CASE WHEN p_account.warned_period_start = p_account.period_start THEN p_account.warned_levels ELSE 0 END
            ::smallint,
        coalesce(sum(b.available) FILTER (WHERE b.pool = 'allowance'), 0)::bigint,
        coalesce(sum(b.available) FILTER (WHERE b.pool = 'purchased'), 0)::bigint,
        coalesce(sum(b.held) FILTER (WHERE b.pool = 'allowance'), 0)::bigint,
        coalesce(sum(b.held) FILTER (WHERE b.pool = 'purchased'), 0)::bigint,
        coalesce(sum(b.used), 0)::bigint,
        coalesce(sum(b.available) FILTER (WHERE b.pool NOT IN ('allowance', 'purchased')), 0)::bigint,
        coalesce(sum(b.held) FILTER (WHERE b.pool NOT IN ('allowance', 'purchased')), 0)::bigint
    FROM buckets AS b WHERE b.account_id = p_account.account_id
$$;
