-- An account's balance in one consistent read: its plan and period, and the sums of its bucket
-- rows. What GetBalance shows and what every change of the hot path answers with. Installed by
-- migration 0014.
CREATE OR REPLACE FUNCTION meter_balance(p_account text)
RETURNS TABLE (
    plan_id text, period_start timestamptz, period_end timestamptz, allowance_total bigint,
    debt bigint, warned smallint, allowance_remaining bigint, purchased_remaining bigint,
    allowance_held bigint, purchased_held bigint, used bigint
)
LANGUAGE sql STABLE AS $$
    SELECT a.plan_id, a.period_start, a.period_end, a.allowance_total, a.debt,
        CASE WHEN a.warned_period_start = a.period_start THEN a.warned_levels ELSE 0 END::smallint,
        coalesce(sum(b.available) FILTER (WHERE b.pool = 'allowance'), 0)::bigint,
        coalesce(sum(b.available) FILTER (WHERE b.pool = 'purchased'), 0)::bigint,
        coalesce(sum(b.held) FILTER (WHERE b.pool = 'allowance'), 0)::bigint,
        coalesce(sum(b.held) FILTER (WHERE b.pool = 'purchased'), 0)::bigint,
        coalesce(sum(b.used), 0)::bigint
    FROM accounts AS a LEFT JOIN buckets AS b ON b.account_id = a.account_id
    WHERE a.account_id = p_account
    GROUP BY a.account_id
$$;
