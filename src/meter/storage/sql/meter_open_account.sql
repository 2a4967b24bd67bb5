-- Open an account: its row (its plan, the months' anchor, its billing period if any, nothing
-- granted and no debt yet), its bucket rows in both pools, empty, and its first allowance month
-- begun (meter_begin_month: granted its plan's allowance unless a subscription's invoice has yet to
-- pay for it). False, changing nothing, when the account exists already.
CREATE OR REPLACE FUNCTION meter_open_account(
    p_account text, p_plan text, p_monthly_allowance bigint, p_month_anchor timestamptz,
    p_billing_start timestamptz, p_billing_end timestamptz, p_subscription_ref text, p_plan_event_time timestamptz,
    p_bucket_count smallint, p_requests_per_minute bigint, p_tokens_per_minute bigint, p_concurrent_holds bigint,
    p_expired_holds text, p_rollover_cap bigint, p_rollover_days integer, p_now timestamptz, p_caller text
) RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO accounts (account_id, plan_id, monthly_allowance, period_start, period_end, month_anchor,
        billing_period_start, billing_period_end, allowance_total, debt, bucket_count, subscription_ref,
        plan_event_time, requests_per_minute, tokens_per_minute, concurrent_holds, expired_holds, rollover_cap,
        rollover_days, created_at, updated_at)
    SELECT p_account, p_plan, p_monthly_allowance, m.month_start, m.month_end, p_month_anchor, p_billing_start,
        p_billing_end, 0, 0, p_bucket_count, p_subscription_ref, p_plan_event_time, p_requests_per_minute,
        p_tokens_per_minute, p_concurrent_holds, p_expired_holds, p_rollover_cap, p_rollover_days, p_now, p_now
    FROM meter_allowance_month(p_month_anchor, p_now) AS m
    ON CONFLICT (account_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO buckets (account_id, pool, bucket, available, held, used, source, expires_at)
    SELECT p_account, p.pool, n, 0, 0, 0, p.source, CASE WHEN p.pool = 'allowance' THEN a.period_end END
    FROM accounts AS a, (VALUES ('allowance', 'allowance'), ('purchased', 'purchase')) AS p (pool, source),
        generate_series(0, p_bucket_count - 1) AS n
    WHERE a.account_id = p_account;
    PERFORM meter_begin_month(p_account, p_now, p_caller);
    RETURN true;
END;
$$;
