-- The debt's two facts, each told once per crossing: 'debt.created' when the account owes tokens
-- and has not been told so, 'debt.cleared' when it owes nothing again and had been. A flag on the
-- account row (debt_announced) remembers what was told, so that whichever change crosses the line
-- tells it, exactly once, without knowing the debt before it. Called at the end of every change
-- that may move the debt (meter_settle, meter_credit, a reversal), which holds the account row
-- locked.
CREATE OR REPLACE FUNCTION meter_debt_events(p_account text, p_ref text, p_now timestamptz)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_account accounts%ROWTYPE;
BEGIN
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF v_account.debt > 0 AND NOT v_account.debt_announced THEN
        UPDATE accounts AS a SET debt_announced = true WHERE a.account_id = p_account;
        PERFORM meter_emit(p_account, 'debt.created', jsonb_build_object('debt', v_account.debt, 'ref', p_ref),
            p_now);
    ELSIF v_account.debt = 0 AND v_account.debt_announced THEN
        UPDATE accounts AS a SET debt_announced = false WHERE a.account_id = p_account;
        PERFORM meter_emit(p_account, 'debt.cleared', jsonb_build_object('ref', p_ref), p_now);
    END IF;
END;
$$;
