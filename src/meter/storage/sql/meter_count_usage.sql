-- One more committed call in the account's usage totals for the day (UTC), model and aggregated
-- labels (the hold's usage_labels: the labels of keys the catalog aggregates), on the totals
-- row of the balance row its Commit holds locked (the hold's first part): no lock a concurrent
-- Commit could wait on. Returns the requests that row now counts, so that its caller assigns the
-- result: an assignment is evaluated without starting the executor a PERFORM starts (about 100
-- microseconds a Commit with 20 connections busy). PL/pgSQL, not SQL, so that its plan is kept.
CREATE OR REPLACE FUNCTION meter_count_usage(p_hold holds, p_now timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_requests bigint;
BEGIN
    INSERT INTO usage_daily AS u (account_id, day, model, labels, pool, bucket, requests, input_tokens,
        output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, charged_tokens, cost_micros,
        unbilled_tokens)
    VALUES (p_hold.account_id, (p_now AT TIME ZONE 'UTC')::date, p_hold.model, p_hold.usage_labels,
        coalesce(p_hold.part_pools[1], 'purchased'), p_hold.part_bucket,
        1, p_hold.usage_input_tokens, p_hold.usage_output_tokens, p_hold.usage_cached_input_tokens,
        p_hold.usage_cache_write_tokens, p_hold.usage_reasoning_tokens, p_hold.charged_tokens, p_hold.cost_micros,
        p_hold.unbilled_tokens)
    ON CONFLICT (account_id, day, model, labels, pool, bucket) DO UPDATE SET requests = u.requests + 1,
        input_tokens = u.input_tokens + excluded.input_tokens,
        output_tokens = u.output_tokens + excluded.output_tokens,
        cached_input_tokens = u.cached_input_tokens + excluded.cached_input_tokens,
        cache_write_tokens = u.cache_write_tokens + excluded.cache_write_tokens,
        reasoning_tokens = u.reasoning_tokens + excluded.reasoning_tokens,
        charged_tokens = u.charged_tokens + excluded.charged_tokens,
        cost_micros = u.cost_micros + excluded.cost_micros,
        unbilled_tokens = u.unbilled_tokens + excluded.unbilled_tokens
    RETURNING u.requests INTO v_requests;
    RETURN v_requests;
END;
$$;
