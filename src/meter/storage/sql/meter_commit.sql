-- Commit: charge a hold for the usage of its call (five token classes, priced at the hold's
-- pinned catalog: meter_priced_usage), exactly once. Outcomes: 'committed' (with the
-- charge), 'replayed' (committed before with this usage: the same answer), 'usage_reused'
-- (committed before with other usage; reused_field names it), 'released' and 'not_found', each
-- with the account's balance. A Commit that moves tokens and finds the account's period ended
-- moves it into its current one first (meter_roll_over). A hold charged its worst case at
-- expiry is committed once more with the call's usage: meter_correct_expired settles the
-- difference.
CREATE OR REPLACE FUNCTION meter_commit(
    p_account text, p_hold uuid, p_input bigint, p_output bigint, p_cached_input bigint,
    p_cache_write bigint, p_reasoning bigint, p_clock_offset double precision, p_caller text
)
RETURNS TABLE (
    outcome text, reused_field text, charged bigint, cost bigint, unbilled bigint, late boolean,
    balance meter_balance_row, counted_budgets jsonb
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_hold holds%ROWTYPE;
    v_account accounts%ROWTYPE;
    v_settled record;
    v_counted bigint;  -- the day's requests on the totals row (meter_count_usage)
BEGIN
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.hold_id = p_hold FOR UPDATE;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF (v_hold.charged_at_expiry OR v_hold.status IN ('open', 'expired')) AND (v_account.period_end <= v_now
        OR v_account.next_grant_expiry <= v_now) THEN
        v_account := meter_roll_over(p_account, v_now);
    END IF;
    IF v_hold.hold_id IS NULL THEN
        outcome := 'not_found';
    ELSIF v_hold.charged_at_expiry THEN
        outcome := 'committed';
        v_hold := meter_priced_usage(v_hold, p_input, p_cached_input, p_cache_write, p_output, p_reasoning);
        v_hold.late := true;
        v_settled := meter_correct_expired(v_hold, v_account, 'committed', v_now, p_caller);
        v_hold.unbilled_tokens := v_hold.unbilled_tokens + v_settled.shortfall;
        v_account.debt := v_settled.debt;
    ELSIF v_hold.status = 'committed' THEN
        outcome := 'replayed';
        reused_field := CASE
            WHEN v_hold.usage_input_tokens <> p_input THEN 'input_tokens'
            WHEN v_hold.usage_output_tokens <> p_output THEN 'output_tokens'
            WHEN v_hold.usage_cached_input_tokens <> p_cached_input THEN 'cached_input_tokens'
            WHEN v_hold.usage_cache_write_tokens <> p_cache_write THEN 'cache_write_tokens'
            WHEN v_hold.usage_reasoning_tokens <> p_reasoning THEN 'reasoning_tokens'
        END;
        IF reused_field IS NOT NULL THEN
            outcome := 'usage_reused';
        END IF;
    ELSIF v_hold.status = 'released' THEN
        outcome := 'released';
    ELSE
        outcome := 'committed';
        v_hold := meter_priced_usage(v_hold, p_input, p_cached_input, p_cache_write, p_output, p_reasoning);
        v_hold.late := v_hold.status = 'expired' OR v_now >= v_hold.expires_at;
        v_settled := meter_settle(v_hold, v_account, v_hold.charged_tokens, 'committed', v_now,
            p_caller);
        v_hold.unbilled_tokens := v_settled.shortfall;
        v_account.debt := v_settled.debt;
        v_counted := meter_count_usage(v_hold, v_now);
    END IF;
    IF outcome IN ('committed', 'replayed') THEN
        charged := v_hold.charged_tokens;
        cost := v_hold.cost_micros;
        unbilled := v_hold.unbilled_tokens;
        late := v_hold.late;
        IF outcome = 'committed' AND v_hold.budget_ids IS NOT NULL THEN  -- for their warnings
            counted_budgets := meter_budget_states(p_account, v_hold.budget_ids, v_hold.budget_periods);
        END IF;
    END IF;
    -- No such account: a balance of NULLs.
    SELECT b.* INTO balance FROM meter_balance(v_account) AS b;
    RETURN NEXT;
END;
$$;
