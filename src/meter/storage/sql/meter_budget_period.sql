-- The period a budget of window p_window counts at p_now: the account's allowance month
-- ('account_month': [p_month_start, p_month_end)), or the UTC day, week (from Monday 00:00) or
-- calendar month containing p_now. Those never go back: a call whose transaction began just before
-- a boundary another call has crossed counts in the period the budget is in (p_counting, the
-- period it counts now; NULL for a new budget). A budget starts again, nothing used or held, when
-- its period changes. The one home of what a window means, for the hot path and for ListBudgets.
CREATE OR REPLACE FUNCTION meter_budget_period(
    p_window text, p_counting timestamptz, p_month_start timestamptz, p_month_end timestamptz, p_now timestamptz,
    OUT period_start timestamptz, OUT period_end timestamptz
) LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_start timestamp;  -- in UTC
BEGIN
    IF p_window = 'account_month' THEN
        period_start := p_month_start;
        period_end := p_month_end;
        RETURN;
    END IF;
    v_start := date_trunc(CASE p_window WHEN 'calendar_month' THEN 'month' ELSE p_window END,
        greatest(p_now, p_counting) AT TIME ZONE 'UTC');
    period_start := v_start AT TIME ZONE 'UTC';
    period_end := (v_start + CASE p_window WHEN 'day' THEN interval '1 day' WHEN 'week' THEN interval '7 days'
        ELSE interval '1 month' END) AT TIME ZONE 'UTC';
END;
$$;
