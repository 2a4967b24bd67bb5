-- ChargeUsage: a call's usage charged without a hold (a proxy admitted it while meter could not
-- be reached, within its fail-open budget), exactly once by its request_id (Reserve's key: one
-- request_id of an account names one call). The call becomes a hold of nothing held, committed at
-- once with its usage: meter_settle takes the charge from what is available, allowance first, and
-- what nothing pays for becomes debt (no refusal: the tokens were used); it is counted in the
-- day's usage like any Commit. No rate limit applies. When the call's Reserve did land after all
-- (its caller never had the answer), its hold, open or expired, is committed with the usage
-- instead (meter_commit). Outcomes: 'committed', 'replayed' (the same call again: the first
-- answer), 'request_reused' (the request_id of another call or usage: reused_field names it),
-- 'account_not_found'. A charge that finds the account's period ended moves it into its current
-- one first (meter_roll_over). The call counts against the budgets its labels match (never
-- refused by them either).
CREATE OR REPLACE FUNCTION meter_charge_usage(
    p_account text, p_request text, p_hold uuid, p_model text, p_input bigint, p_output bigint,
    p_cached_input bigint, p_cache_write bigint, p_reasoning bigint, p_labels jsonb, p_pricing meter_pricing,
    p_clock_offset double precision, p_caller text
)
RETURNS TABLE (
    outcome text, reservation_id text, reused_field text, charged bigint, cost bigint, unbilled bigint,
    balance meter_balance_row, counted_budgets jsonb
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_hold holds%ROWTYPE;
    v_account accounts%ROWTYPE;
    v_settled record;
    v_counted bigint;
    v_budget_ids bigint[];  -- the budgets it counts against, with nothing held on their rows
    v_budget_buckets smallint[];
    v_budget_held bigint[];
    v_budget_periods timestamptz[];
BEGIN
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF NOT FOUND THEN
        outcome := 'account_not_found';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_account AND h.request_id = p_request FOR UPDATE;
    IF FOUND AND v_hold.model = p_model AND v_hold.labels = p_labels
        AND (v_hold.status IN ('open', 'expired') OR v_hold.charged_at_expiry) THEN
        -- The Reserve of this call did land, though its caller never had the answer (meter could
        -- not be reached, and the call was let through): the call is that hold's Commit.
        RETURN QUERY SELECT c.outcome, meter_reservation_id(p_account, v_hold.hold_id), c.reused_field, c.charged,
            c.cost, c.unbilled, c.balance, c.counted_budgets
        FROM meter_commit(p_account, v_hold.hold_id, p_input, p_output, p_cached_input, p_cache_write, p_reasoning,
            p_clock_offset, p_caller) AS c;
        RETURN;
    ELSIF FOUND THEN
        reused_field := CASE
            WHEN v_hold.model <> p_model THEN 'model'
            WHEN v_hold.usage_input_tokens IS DISTINCT FROM p_input OR v_hold.status <> 'committed'
                THEN 'input_tokens'
            WHEN v_hold.usage_output_tokens <> p_output THEN 'output_tokens'
            WHEN v_hold.usage_cached_input_tokens <> p_cached_input THEN 'cached_input_tokens'
            WHEN v_hold.usage_cache_write_tokens <> p_cache_write THEN 'cache_write_tokens'
            WHEN v_hold.usage_reasoning_tokens <> p_reasoning THEN 'reasoning_tokens'
            WHEN v_hold.labels <> p_labels THEN 'labels'
        END;
        outcome := CASE WHEN reused_field IS NULL THEN 'replayed' ELSE 'request_reused' END;
    ELSE
        IF v_account.period_end <= v_now OR v_account.next_grant_expiry <= v_now THEN
            v_account := meter_roll_over(p_account, v_now);
        END IF;
        outcome := 'committed';
        IF p_labels <> '{}' AND v_account.budget_count > 0 THEN
            SELECT array_agg(g.budget_id ORDER BY g.budget_id), array_agg(CAST(0 AS smallint)),
                array_agg(CAST(0 AS bigint)), array_agg(g.period_start ORDER BY g.budget_id)
            INTO v_budget_ids, v_budget_buckets, v_budget_held, v_budget_periods
            FROM meter_current_budgets(p_account, p_labels, v_account.period_start, v_account.period_end, v_now) AS g;
        END IF;
        INSERT INTO holds AS h (account_id, hold_id, request_id, model, input_tokens, max_output_tokens,
            ttl_seconds, labels, catalog_version, input_weight, output_weight, input_price, output_price,
            cached_input_weight, cache_write_weight, reasoning_weight, cached_input_price, cache_write_price,
            reasoning_price, usage_labels, budget_ids, budget_buckets, budget_held, budget_periods, held, part_pools,
            part_held, part_bucket, period_start, status, created_at, expires_at)
        SELECT p_account, p_hold, p_request, p_model, p_input, p_output, 1, p_labels, (p_pricing).*, v_budget_ids,
            v_budget_buckets, v_budget_held, v_budget_periods, 0, '{}', '{}', 0, v_account.period_start, 'open', v_now, v_now
        RETURNING * INTO v_hold;
        v_hold := meter_priced_usage(v_hold, p_input, p_cached_input, p_cache_write, p_output, p_reasoning);
        v_hold.late := false;
        v_settled := meter_settle(v_hold, v_account, v_hold.charged_tokens, 'committed', v_now,
            p_caller);
        v_hold.unbilled_tokens := v_settled.shortfall;
        v_account.debt := v_settled.debt;
        v_counted := meter_count_usage(v_hold, v_now);
    END IF;
    reservation_id := meter_reservation_id(p_account, v_hold.hold_id);
    IF outcome IN ('committed', 'replayed') THEN
        charged := v_hold.charged_tokens;
        IF outcome = 'committed' AND v_hold.budget_ids IS NOT NULL THEN  -- for their warnings
            counted_budgets := meter_budget_states(p_account, v_hold.budget_ids, v_hold.budget_periods);
        END IF;
        cost := v_hold.cost_micros;
        unbilled := v_hold.unbilled_tokens;
    END IF;
    SELECT b.* INTO balance FROM meter_balance(v_account) AS b;
    RETURN NEXT;
END;
$$;
