-- Lock every row of one budget, in bucket order (the one order multi-row changes of a budget take
-- them), and return what they have available between them.
CREATE OR REPLACE FUNCTION meter_lock_budget_rows(p_account text, p_budget bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_total bigint;
BEGIN
    SELECT coalesce(sum(r.available), 0) INTO v_total
    FROM (
        SELECT b.available FROM budget_buckets AS b
        WHERE b.account_id = p_account AND b.budget_id = p_budget ORDER BY b.bucket FOR UPDATE
    ) AS r;
    RETURN v_total;
END;
$$;
