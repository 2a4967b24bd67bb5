-- Add p_levels (warning level bits) to those a budget has announced in the period starting at
-- p_period_start, under the budget row's lock: exactly one transaction adds a level, so each is
-- told once per period. Returns the bits announced before; NULL when there is nothing new to tell
-- (another request or replica told it) or the budget counts another period (or is gone).
CREATE OR REPLACE FUNCTION meter_announce_budget(
    p_account text, p_budget_id bigint, p_period_start timestamptz, p_levels smallint
) RETURNS smallint LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_budget budgets%ROWTYPE;
    v_before smallint;
BEGIN
    SELECT * INTO v_budget FROM budgets AS g
    WHERE g.account_id = p_account AND g.budget_id = p_budget_id AND g.period_start = p_period_start
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_before := CASE WHEN v_budget.warned_period_start = p_period_start THEN v_budget.warned_levels ELSE 0 END;
    IF v_before | p_levels = v_before THEN
        RETURN NULL;
    END IF;
    UPDATE budgets AS g SET warned_levels = v_before | p_levels, warned_period_start = p_period_start
    WHERE g.account_id = p_account AND g.budget_id = p_budget_id;
    RETURN v_before;
END;
$$;
