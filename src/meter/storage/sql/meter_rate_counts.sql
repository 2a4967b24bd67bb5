-- What an account has used of its rate limits: Reserves started and tokens they held in the UTC
-- minute of p_now, and holds open now, as counted on its rows. What a Reserve is refused by
-- (meter_rate_refusal) and what GetBalance shows as headroom.
CREATE OR REPLACE FUNCTION meter_rate_counts(p_account text, p_now timestamptz)
RETURNS TABLE (window_start timestamptz, requests bigint, tokens bigint, open_holds bigint)
LANGUAGE sql STABLE AS $$
    SELECT date_trunc('minute', p_now),
        coalesce(sum(b.rate_requests) FILTER (WHERE b.rate_window = date_trunc('minute', p_now)), 0)::bigint,
        coalesce(sum(b.rate_tokens) FILTER (WHERE b.rate_window = date_trunc('minute', p_now)), 0)::bigint,
        coalesce(sum(b.open_holds), 0)::bigint
    FROM buckets AS b WHERE b.account_id = p_account
$$;
