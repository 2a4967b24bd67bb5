-- Fold a past day's usage totals. Commit spreads a day's totals of an account, model and summed
-- labels over the balance rows its calls were held on, so that concurrent Commits meet on no
-- totals row; once no Commit writes the day any more, those rows become one, and GetUsage reads
-- rows in proportion to days, models and labels, however many balance rows and calls there were.
-- The caller folds only days before yesterday; a late Commit or Release correcting a charged
-- expiry then finds the folded row (meter_correct_expired). Folds the rows of at most p_accounts
-- accounts of p_day, each account's in one statement, and returns how many it folded (0: the day
-- is folded).
CREATE OR REPLACE FUNCTION meter_fold_usage(p_day date, p_accounts integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_account text;
    v_folded integer := 0;
BEGIN
    FOR v_account IN
        SELECT u.account_id FROM usage_daily AS u WHERE u.day = p_day
        GROUP BY u.account_id HAVING count(*) > count(DISTINCT (u.model, u.labels)) LIMIT p_accounts
    LOOP
        WITH folded AS (
            DELETE FROM usage_daily AS u WHERE u.account_id = v_account AND u.day = p_day RETURNING u.*
        )
        INSERT INTO usage_daily (account_id, day, model, labels, pool, bucket, requests, input_tokens,
            output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, charged_tokens, cost_micros,
            unbilled_tokens)
        SELECT f.account_id, f.day, f.model, f.labels, min(f.pool), min(f.bucket), sum(f.requests),
            sum(f.input_tokens), sum(f.output_tokens), sum(f.cached_input_tokens), sum(f.cache_write_tokens),
            sum(f.reasoning_tokens), sum(f.charged_tokens), sum(f.cost_micros), sum(f.unbilled_tokens)
        FROM folded AS f GROUP BY f.account_id, f.day, f.model, f.labels;
        v_folded := v_folded + 1;
    END LOOP;
    RETURN v_folded;
END;
$$;
