-- The sweeper's folding of past days' usage totals (meter_fold_usage), oldest day first, from the
-- day after the last one folded (usage_folding; on the first run, the oldest day of usage): folds
-- at most p_accounts accounts' rows of that day, and marks the day folded once none is left. Only
-- days before yesterday (p_today - 1): no Commit writes them any more. Replicas take turns on the
-- progress row. Returns the day it worked on (NULL: every day before yesterday is folded).
CREATE OR REPLACE FUNCTION meter_fold_usage_days(p_today date, p_accounts integer) RETURNS date
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_through date;
    v_day date;
BEGIN
    SELECT f.folded_through INTO v_through FROM usage_folding AS f FOR UPDATE;
    v_day := coalesce(v_through + 1, (SELECT min(u.day) FROM usage_daily AS u));
    IF v_day IS NULL OR v_day >= p_today - 1 THEN
        RETURN NULL;
    END IF;
    IF meter_fold_usage(v_day, p_accounts) < p_accounts THEN
        UPDATE usage_folding AS f SET folded_through = v_day;
    END IF;
    RETURN v_day;
END;
$$;
