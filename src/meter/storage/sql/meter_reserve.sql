-- Reserve: hold the worst case of a model call, ceil(input x input weight + max output x the
-- greater of the output and reasoning weights) tokens and at least one, or refuse it (reasoning
-- tokens count against a call's max output; cached input is cheaper than input, and cache writes
-- dearer than the hold are charged at Commit like any usage beyond it). The hold pins the model's
-- prices and weights of every token class, and the labels its usage is summed by. The hold goes on
-- one row of the first pool in the order pools are drawn (by priority, then the soonest expiry,
-- then the oldest: the month's allowance before purchased tokens; a grant by its own terms) that
-- has tokens left, when one of its rows has them all, else it is taken from all rows, pool by pool
-- in that order (meter_hold_across_buckets; `across` says so). The hold records its parts: the
-- pools it drew on, what it took from each, the row. Outcomes, each with the account's balance:
-- 'placed', 'replayed' (this request_id was placed before with the same parameters: its hold),
-- 'request_reused' (before, with other parameters; reused_field names one), 'account_not_found',
-- 'in_debt', 'rate_limited' (limit_name, limit_value, retry_after: meter_rate_refusal),
-- 'budget_exceeded' (a budget its labels count against has not got its worst case, in tokens or
-- micro-USD: budget_* name it; meter_hold_budgets), 'insufficient' (the balance shows what is
-- available; what budgets held is given back). A call that finds the account's period ended, or a
-- grant's expiry come, brings it to now first (meter_roll_over). The plans' rate limits come with
-- the call (meter_rate_limits); an account without any is not counted against them.
CREATE OR REPLACE FUNCTION meter_reserve(
    p_call meter_reserve_call, p_clock_offset double precision, p_plans text[], p_requests_per_minute bigint[],
    p_tokens_per_minute bigint[], p_concurrent_holds bigint[], p_wait_ms integer, p_sweep_seconds double precision
)
RETURNS TABLE (
    outcome text, reservation_id text, held bigint, expires_at timestamptz, catalog_version text, status text,
    reused_field text, limit_name text, limit_value bigint, retry_after double precision, required bigint,
    across boolean, balance meter_balance_row, budget_key text, budget_value text, budget_unit text,
    budget_cap bigint, budget_remaining bigint, budget_required bigint
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now() + make_interval(secs => p_clock_offset);
    v_window timestamptz := date_trunc('minute', now() + make_interval(secs => p_clock_offset));
    v_account accounts%ROWTYPE;
    v_hold holds%ROWTYPE;
    v_first smallint;
    v_bucket smallint;
    v_pool text;
    v_part_pools text[];
    v_part_held bigint[];
    v_across record;
    v_limits record;
    v_refusal record;
    v_budget_ids bigint[];  -- the hold's parts of its budgets (meter_hold_budgets)
    v_budget_buckets smallint[];
    v_budget_held bigint[];
    v_budget_periods timestamptz[];
    v_pricing meter_pricing := p_call.pricing;
BEGIN
    required := greatest(1, meter_weighted_tokens(p_call.input_tokens, 0, 0, p_call.max_output_tokens, 0, v_pricing.input_weight, 0, 0,
        greatest(v_pricing.output_weight, v_pricing.reasoning_weight), 0));
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_call.account_id;
    IF NOT FOUND THEN
        outcome := 'account_not_found';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO v_hold FROM holds AS h WHERE h.account_id = p_call.account_id AND h.request_id = p_call.request_id;
    IF FOUND THEN
        outcome := 'replayed';
        reused_field := CASE
            WHEN v_hold.model <> p_call.model THEN 'model'
            WHEN v_hold.input_tokens <> p_call.input_tokens THEN 'input_tokens'
            WHEN v_hold.max_output_tokens <> p_call.max_output_tokens THEN 'max_output_tokens'
            WHEN v_hold.ttl_seconds <> p_call.ttl_seconds THEN 'ttl_seconds'
            WHEN v_hold.labels <> p_call.labels THEN 'labels'
        END;
        IF reused_field IS NOT NULL THEN
            outcome := 'request_reused';
        END IF;
    ELSE
        IF v_account.period_end <= v_now OR v_account.next_grant_expiry <= v_now THEN
            v_account := meter_roll_over(p_call.account_id, v_now);
        END IF;
        IF v_account.debt > 0 THEN
            outcome := 'in_debt';
        END IF;
    END IF;
    IF outcome IS NULL THEN
        SELECT * INTO v_limits
        FROM meter_rate_limits(v_account, p_plans, p_requests_per_minute, p_tokens_per_minute, p_concurrent_holds);
        IF num_nonnulls(v_limits.requests_per_minute, v_limits.tokens_per_minute, v_limits.concurrent_holds) > 0
        THEN
            v_refusal := meter_rate_refusal(p_call.account_id, required, v_limits.requests_per_minute,
                v_limits.tokens_per_minute, v_limits.concurrent_holds, v_now, p_sweep_seconds);
            IF v_refusal.limit_name IS NOT NULL THEN
                outcome := 'rate_limited';
                limit_name := v_refusal.limit_name;
                limit_value := v_refusal.limit_value;
                retry_after := v_refusal.retry_after;
            END IF;
        END IF;
    END IF;
    -- The account's count of budgets, read with it, spares the calls of accounts without any a
    -- query (a condition with a subquery is run as a statement, not as a simple expression).
    IF outcome IS NULL AND p_call.labels <> '{}' AND v_account.budget_count > 0 THEN
        SELECT h.budget_ids, h.budget_buckets, h.budget_held, h.budget_periods, h.refused_key, h.refused_value,
            h.refused_unit, h.refused_cap, h.refused_remaining, h.refused_required
        INTO v_budget_ids, v_budget_buckets, v_budget_held, v_budget_periods, budget_key, budget_value, budget_unit,
            budget_cap, budget_remaining, budget_required
        FROM meter_hold_budgets(p_call.account_id, p_call.labels, v_account.period_start, v_account.period_end,
            v_now, required,
            meter_cost_micros(p_call.input_tokens, 0, 0, p_call.max_output_tokens, 0, v_pricing.input_price, 0, 0,
                greatest(v_pricing.output_price, v_pricing.reasoning_price), 0), p_call.start) AS h;
        IF budget_key IS NOT NULL THEN
            outcome := 'budget_exceeded';
        END IF;
    END IF;
    IF outcome IS NULL THEN
        v_first := p_call.start % v_account.bucket_count;
        -- The first pool with tokens left decides where the hold goes: looked for first, since an
        -- account that has used a pool up would otherwise look for a row of it in vain.
        SELECT b.pool INTO v_pool FROM buckets AS b
        WHERE b.account_id = p_call.account_id AND b.available > 0 AND (b.expires_at IS NULL OR b.expires_at > v_now)
        ORDER BY b.priority, b.expires_at NULLS LAST, b.draw_seq LIMIT 1;
        IF FOUND THEN
            v_bucket := meter_hold_in_one_bucket(p_call.account_id, v_pool, required, v_first,
                v_account.bucket_count, v_window, p_wait_ms);
        END IF;
        IF v_bucket IS NOT NULL THEN
            v_part_pools := ARRAY[v_pool];
            v_part_held := ARRAY[required];
        ELSE
            across := true;
            v_across := meter_hold_across_buckets(p_call.account_id, required, v_first, v_window, v_now);
            IF v_across.part_pools IS NULL THEN
                outcome := 'insufficient';
                IF v_budget_ids IS NOT NULL THEN  -- what the budgets held goes back
                    PERFORM meter_settle_budgets(p_call.account_id, v_budget_periods, v_budget_ids,
                        v_budget_buckets, v_budget_held, true, 0, 0);
                END IF;
            ELSE
                v_part_pools := v_across.part_pools;
                v_part_held := v_across.part_held;
                v_bucket := v_first;
            END IF;
        END IF;
    END IF;
    IF outcome IS NULL THEN
        outcome := 'placed';
        INSERT INTO holds AS h (account_id, hold_id, request_id, model, input_tokens, max_output_tokens,
            ttl_seconds, labels, catalog_version, input_weight, output_weight, input_price, output_price,
            cached_input_weight, cache_write_weight, reasoning_weight, cached_input_price, cache_write_price,
            reasoning_price, usage_labels, budget_ids, budget_buckets, budget_held, budget_periods, held, part_pools,
            part_held, part_bucket, period_start, status, created_at, expires_at)
        SELECT p_call.account_id, p_call.hold_id, p_call.request_id, p_call.model, p_call.input_tokens,
            p_call.max_output_tokens, p_call.ttl_seconds, p_call.labels, (v_pricing).*, v_budget_ids,
            v_budget_buckets, v_budget_held, v_budget_periods, required, v_part_pools, v_part_held, v_bucket,
            v_account.period_start, 'open', v_now, v_now + make_interval(secs => p_call.ttl_seconds)
        ON CONFLICT ON CONSTRAINT holds_account_id_request_id_key DO NOTHING
        RETURNING h.* INTO v_hold;
        IF NOT FOUND THEN
            -- Retried as a whole by the service: the retry finds the concurrent Reserve's hold.
            RAISE EXCEPTION 'a concurrent Reserve used request_id %', p_call.request_id USING ERRCODE = '40001';
        END IF;
    END IF;
    IF outcome IN ('placed', 'replayed') THEN
        reservation_id := meter_reservation_id(v_hold.account_id, v_hold.hold_id);
        held := v_hold.held;
        expires_at := v_hold.expires_at;
        catalog_version := v_hold.catalog_version;
        status := v_hold.status;
    END IF;
    across := coalesce(across, false);
    SELECT b.* INTO balance FROM meter_balance(v_account) AS b;
    RETURN NEXT;
END;
$$;
