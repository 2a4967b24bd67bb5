-- Put p_total, what a budget has available, back on its rows evenly, so that the next holds fit
-- one row: total / rows on each, the remainder on row 0; a total below zero (usage beyond its
-- holds took the budget past its cap) all on row 0, so that no row admits a hold. The caller has
-- locked the rows (meter_lock_budget_rows).
CREATE OR REPLACE FUNCTION meter_spread_budget(p_account text, p_budget bigint, p_total bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_rows bigint;
BEGIN
    SELECT count(*) INTO v_rows FROM budget_buckets AS b WHERE b.account_id = p_account AND b.budget_id = p_budget;
    UPDATE budget_buckets AS b SET available = CASE
        WHEN p_total < 0 THEN CASE WHEN b.bucket = 0 THEN p_total ELSE 0 END
        ELSE p_total / v_rows + CASE WHEN b.bucket = 0 THEN p_total % v_rows ELSE 0 END
    END
    WHERE b.account_id = p_account AND b.budget_id = p_budget;
END;
$$;
