-- DeleteBudget: the budget and its rows go, and the account counts one budget less. Open holds
-- that held a part of it settle without it (meter_settle_budgets finds no row). Returns whether
-- there was such a budget.
CREATE OR REPLACE FUNCTION meter_delete_budget(p_account text, p_key text, p_value text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM budgets AS g WHERE g.account_id = p_account AND g.label_key = p_key AND g.label_value = p_value;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE accounts AS a SET budget_count = a.budget_count - 1 WHERE a.account_id = p_account;
    RETURN true;
END;
$$;
