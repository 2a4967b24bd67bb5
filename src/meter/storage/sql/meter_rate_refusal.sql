-- Whether a Reserve of p_amount tokens would go over one of the account's rate limits (NULL: no
-- such limit) and, if so, the limit that keeps it out longest, with the delay after which the same
-- Reserve can pass: the end of the minute for the per-minute limits; for open holds, the soonest
-- expiry plus one sweep (a Commit or Release may free one sooner). A Reserve larger than the
-- tokens-per-minute limit itself can never pass: refused with no delay (retry_after NULL). All NULL
-- when the Reserve is within its limits (counted by meter_rate_counts). One record, not a set, so
-- that meter_reserve assigns it (no executor started for the call); it calls it only for an
-- account with a limit.
CREATE OR REPLACE FUNCTION meter_rate_refusal(
    p_account text, p_amount bigint, p_requests_per_minute bigint, p_tokens_per_minute bigint,
    p_concurrent_holds bigint, p_now timestamptz, p_sweep_seconds double precision,
    OUT limit_name text, OUT limit_value bigint, OUT retry_after double precision
) LANGUAGE plpgsql AS $$
DECLARE
    v_minute_left double precision;
    v_requests bigint;
    v_tokens bigint;
    v_open bigint;
    v_soonest timestamptz;
BEGIN
    IF p_tokens_per_minute < p_amount THEN
        limit_name := 'tokensPerMinute';
        limit_value := p_tokens_per_minute;
        RETURN;
    END IF;
    SELECT c.requests, c.tokens, c.open_holds INTO v_requests, v_tokens, v_open
    FROM meter_rate_counts(p_account, p_now) AS c;
    IF NOT (v_requests + 1 > p_requests_per_minute OR v_tokens + p_amount > p_tokens_per_minute
        OR v_open + 1 > p_concurrent_holds) THEN
        RETURN;  -- most Reserves: no query picks among the limits
    END IF;
    v_minute_left := greatest(0, extract(epoch FROM date_trunc('minute', p_now) + interval '1 minute' - p_now));
    IF v_open + 1 > p_concurrent_holds THEN
        SELECT min(h.expires_at) INTO v_soonest FROM holds AS h
        WHERE h.status = 'open' AND h.account_id = p_account;
    END IF;
    -- In this order, so that of limits keeping the Reserve out as long the first is named.
    SELECT r.name, r.value, r.wait INTO limit_name, limit_value, retry_after FROM (VALUES
        (1, 'requestsPerMinute', p_requests_per_minute, v_minute_left, v_requests + 1 > p_requests_per_minute),
        (2, 'tokensPerMinute', p_tokens_per_minute, v_minute_left, v_tokens + p_amount > p_tokens_per_minute),
        (3, 'concurrentHolds', p_concurrent_holds,
            coalesce(greatest(0, extract(epoch FROM v_soonest - p_now)), 0) + p_sweep_seconds,
            v_open + 1 > p_concurrent_holds)
    ) AS r (n, name, value, wait, over)
    WHERE r.over ORDER BY r.wait DESC, r.n LIMIT 1;
END;
$$;
