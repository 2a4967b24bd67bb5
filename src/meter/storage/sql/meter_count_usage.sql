-- One more committed call in the account's usage totals for the day (UTC) and model, on the totals
-- row of the balance row its Commit holds locked (the hold's first part): no lock a concurrent
-- Commit could wait on. PL/pgSQL, not SQL, so that its plan is kept: a SQL function run by PERFORM
-- is planned again at every call. Installed by migration 0017.
CREATE OR REPLACE FUNCTION meter_count_usage(p_hold holds, p_now timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_daily AS u (account_id, day, model, pool, bucket, requests, input_tokens, output_tokens,
        charged_tokens, cost_micros, unbilled_tokens)
    VALUES (p_hold.account_id, (p_now AT TIME ZONE 'UTC')::date, p_hold.model,
        CASE WHEN p_hold.allowance_held > 0 THEN 'allowance' ELSE 'purchased' END,
        CASE WHEN p_hold.allowance_held > 0 THEN p_hold.allowance_bucket ELSE p_hold.purchased_bucket END,
        1, p_hold.usage_input_tokens, p_hold.usage_output_tokens, p_hold.charged_tokens, p_hold.cost_micros,
        p_hold.unbilled_tokens)
    ON CONFLICT (account_id, day, model, pool, bucket) DO UPDATE SET requests = u.requests + 1,
        input_tokens = u.input_tokens + excluded.input_tokens,
        output_tokens = u.output_tokens + excluded.output_tokens,
        charged_tokens = u.charged_tokens + excluded.charged_tokens,
        cost_micros = u.cost_micros + excluded.cost_micros,
        unbilled_tokens = u.unbilled_tokens + excluded.unbilled_tokens;
END;
$$;
