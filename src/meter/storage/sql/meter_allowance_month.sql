-- The allowance month containing p_now: the calendar month (UTC) when p_anchor is NULL, else the
-- month counted from p_anchor (a subscription's billing anchor, or the period SetPlan gave), the
-- same day and time each month, on the month's last day where it has no such day (the 31st stays
-- the 31st in the months that have one). An anchor at most a few minutes ahead of p_now (Stripe's
-- clock) gives its first month. Months are added in UTC, whatever the session's time zone.
CREATE OR REPLACE FUNCTION meter_allowance_month(
    p_anchor timestamptz, p_now timestamptz, OUT month_start timestamptz, OUT month_end timestamptz
) LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_anchor timestamp := p_anchor AT TIME ZONE 'UTC';
    v_months integer;
BEGIN
    IF p_anchor IS NULL THEN
        month_start := date_trunc('month', p_now AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
        month_end := (date_trunc('month', p_now AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
        RETURN;
    END IF;
    -- The whole months between anchor and now, then one back where adding them passes now (the
    -- day clamps), or one on where the next month has begun already.
    v_months := greatest(0, (extract(year FROM age(p_now AT TIME ZONE 'UTC', v_anchor)) * 12
        + extract(month FROM age(p_now AT TIME ZONE 'UTC', v_anchor)))::integer);
    WHILE v_months > 0 AND (v_anchor + make_interval(months => v_months)) AT TIME ZONE 'UTC' > p_now LOOP
        v_months := v_months - 1;
    END LOOP;
    WHILE (v_anchor + make_interval(months => v_months + 1)) AT TIME ZONE 'UTC' <= p_now LOOP
        v_months := v_months + 1;
    END LOOP;
    month_start := (v_anchor + make_interval(months => v_months)) AT TIME ZONE 'UTC';
    month_end := (v_anchor + make_interval(months => v_months + 1)) AT TIME ZONE 'UTC';
END;
$$;
