-- A hold charged its worst case at expiry (the account's expired holds are charged), then
-- committed late (p_hold carries the call's usage, charge and cost) or released (p_status
-- 'released': nothing was used): the difference is settled, once. More than the worst case is
-- taken from what is available, pool by pool in the order pools are drawn (debt where nothing is);
-- less goes back to the parts it came from, the last drawn first, paying debt first; allowance of
-- a period that has ended does not come back (it expires). The expiry's line of the day's usage
-- totals becomes the call's; the period's usage counter follows while the hold's period is the
-- account's. The hold keeps its settled_at (the day its usage is counted on). The caller has
-- locked the hold row; this locks the budgets' rows (the difference counted against them), then
-- the account row, then its bucket rows, then the totals row.
CREATE OR REPLACE FUNCTION meter_correct_expired(
    p_hold holds, p_account accounts, p_status text, p_now timestamptz, p_caller text,
    OUT shortfall bigint, OUT debt bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_reservation text := meter_reservation_id(p_hold.account_id, p_hold.hold_id);  -- the ledger's ref
    v_old holds%ROWTYPE;
    v_released boolean := p_status = 'released';
    v_charge bigint := CASE WHEN p_status = 'released' THEN 0 ELSE p_hold.charged_tokens END;
    v_delta bigint;
    v_same_period boolean := p_hold.period_start = p_account.period_start;
    v_parts integer := cardinality(p_hold.part_pools);
    v_left bigint;
    v_back bigint[] := array_fill(0::bigint, ARRAY[cardinality(p_hold.part_pools)]);  -- each part's
    v_expired bigint;
    v_taken record;
    v_paid record;
    v_kinds text[] := '{}';  -- the ledger's entries (meter_hold_entries)
    v_pools text[] := '{}';
    v_amounts bigint[] := '{}';
    v_rows_pools text[] := '{}';  -- what changes on the hold's rows
    v_rows_available bigint[] := '{}';
    v_rows_used bigint[] := '{}';
    v_i integer;
    v_pool text;  -- the totals row of the expiry's count
    v_bucket smallint;
BEGIN
    SELECT * INTO v_old FROM holds AS h WHERE h.account_id = p_hold.account_id AND h.hold_id = p_hold.hold_id;
    v_delta := v_charge - v_old.charged_tokens;
    shortfall := 0;
    IF p_hold.budget_ids IS NOT NULL THEN
        PERFORM meter_settle_budgets(p_hold.account_id, p_hold.budget_periods, p_hold.budget_ids, p_hold.budget_buckets,
            p_hold.budget_held, false, v_delta,
            CASE WHEN v_released THEN 0 ELSE p_hold.cost_micros END - v_old.cost_micros);
    END IF;
    SELECT a.debt INTO debt FROM accounts AS a WHERE a.account_id = p_hold.account_id FOR UPDATE;
    PERFORM meter_lock_buckets(p_hold.account_id);
    IF v_delta > 0 THEN
        v_taken := meter_take(p_hold.account_id, v_delta, p_now);
        shortfall := v_taken.shortfall;
        IF shortfall > 0 THEN
            UPDATE accounts AS a SET debt = a.debt + shortfall, updated_at = p_now
            WHERE a.account_id = p_hold.account_id
            RETURNING a.debt INTO debt;
        END IF;
        v_kinds := array_fill('usage'::text, ARRAY[cardinality(v_taken.part_pools) + 1]);
        v_pools := v_taken.part_pools || 'debt'::text;
        v_amounts := (SELECT array_agg(-t ORDER BY n) FROM unnest(v_taken.part_amounts) WITH ORDINALITY AS x (t, n))
            || -shortfall;
        -- What it took counts as used on the hold's rows, the shortfall on its first part's.
        v_rows_pools := v_taken.part_pools || coalesce(p_hold.part_pools[1], 'allowance');
        v_rows_available := array_fill(0::bigint, ARRAY[cardinality(v_taken.part_pools) + 1]);
        v_rows_used := v_taken.part_amounts || shortfall;
    ELSIF v_delta < 0 THEN
        -- Less than its worst case: back to the parts it came from, the last drawn first.
        v_left := -v_delta;
        FOR v_i IN REVERSE v_parts .. 1 LOOP
            v_back[v_i] := least(v_left, p_hold.part_held[v_i]);
            v_left := v_left - v_back[v_i];
            v_expired := 0;
            IF meter_part_ended(p_hold, p_account, v_i, p_now) THEN
                v_expired := v_back[v_i];
                v_back[v_i] := 0;
            END IF;
            v_kinds := v_kinds || ARRAY['usage', 'expiry'];
            v_pools := v_pools || ARRAY[p_hold.part_pools[v_i], p_hold.part_pools[v_i]];
            v_amounts := v_amounts || ARRAY[v_back[v_i] + v_expired, -v_expired];
        END LOOP;
        v_rows_available := v_back;
        v_rows_pools := p_hold.part_pools;
        -- The usage it gives back was counted in its period: only while that is the account's.
        v_rows_used := CASE WHEN v_same_period
            THEN (SELECT array_agg(-b ORDER BY n) FROM unnest(v_back) WITH ORDINALITY AS x (b, n))
            ELSE array_fill(0::bigint, ARRAY[v_parts]) END;
    END IF;
    PERFORM meter_hold_entries(p_hold.account_id, v_reservation, p_now, p_caller, v_kinds, v_pools, v_amounts);
    IF v_delta < 0 AND debt > 0 THEN  -- what comes back pays the debt first
        v_paid := meter_pay_debt(p_hold.account_id, p_hold.part_pools, v_back, NULL, v_reservation, p_now, p_caller);
        v_rows_available := v_paid.amounts_left;
        debt := v_paid.debt_left;
    END IF;
    UPDATE buckets AS b SET available = b.available + r.available, used = b.used + r.used
    FROM (
        SELECT x.pool, sum(x.available) AS available, sum(x.used) AS used
        FROM unnest(v_rows_pools, v_rows_available, v_rows_used) AS x (pool, available, used) GROUP BY x.pool
    ) AS r
    WHERE b.account_id = p_hold.account_id AND b.pool = r.pool AND b.bucket = p_hold.part_bucket;
    -- The expiry's line of the day's usage totals becomes the call's (or goes, for a Release): on the
    -- row of its balance row, or the one its day was folded into (meter_fold_usage).
    SELECT u.pool, u.bucket INTO v_pool, v_bucket FROM usage_daily AS u
    WHERE u.account_id = p_hold.account_id AND u.day = (v_old.settled_at AT TIME ZONE 'UTC')::date
      AND u.model = p_hold.model AND u.labels = p_hold.usage_labels
    ORDER BY u.pool = coalesce(p_hold.part_pools[1], 'purchased') AND u.bucket = p_hold.part_bucket DESC
    LIMIT 1 FOR UPDATE;
    IF NOT FOUND THEN  -- folded while this waited for its row: retried as a whole by the service
        RAISE EXCEPTION 'the usage totals of % were being folded', p_hold.account_id USING ERRCODE = '40001';
    END IF;
    DELETE FROM usage_daily AS u
    WHERE v_released AND u.requests = 1 AND u.account_id = p_hold.account_id
      AND u.day = (v_old.settled_at AT TIME ZONE 'UTC')::date AND u.model = p_hold.model
      AND u.labels = p_hold.usage_labels AND u.pool = v_pool AND u.bucket = v_bucket;
    UPDATE usage_daily AS u SET requests = u.requests - CASE WHEN v_released THEN 1 ELSE 0 END,
        input_tokens = u.input_tokens + CASE WHEN v_released THEN 0 ELSE p_hold.usage_input_tokens END
            - v_old.usage_input_tokens,
        output_tokens = u.output_tokens + CASE WHEN v_released THEN 0 ELSE p_hold.usage_output_tokens END
            - v_old.usage_output_tokens,
        cached_input_tokens = u.cached_input_tokens
            + CASE WHEN v_released THEN 0 ELSE p_hold.usage_cached_input_tokens END - v_old.usage_cached_input_tokens,
        cache_write_tokens = u.cache_write_tokens
            + CASE WHEN v_released THEN 0 ELSE p_hold.usage_cache_write_tokens END - v_old.usage_cache_write_tokens,
        reasoning_tokens = u.reasoning_tokens
            + CASE WHEN v_released THEN 0 ELSE p_hold.usage_reasoning_tokens END - v_old.usage_reasoning_tokens,
        charged_tokens = u.charged_tokens + v_delta,
        cost_micros = u.cost_micros + CASE WHEN v_released THEN 0 ELSE p_hold.cost_micros END - v_old.cost_micros,
        unbilled_tokens = u.unbilled_tokens + shortfall - v_old.unbilled_tokens
    WHERE u.account_id = p_hold.account_id AND u.day = (v_old.settled_at AT TIME ZONE 'UTC')::date
      AND u.model = p_hold.model AND u.labels = p_hold.usage_labels AND u.pool = v_pool AND u.bucket = v_bucket;
    UPDATE holds AS h SET status = p_status, charged_at_expiry = false, late = NOT v_released,
        usage_input_tokens = CASE WHEN v_released THEN NULL ELSE p_hold.usage_input_tokens END,
        usage_output_tokens = CASE WHEN v_released THEN NULL ELSE p_hold.usage_output_tokens END,
        usage_cached_input_tokens = CASE WHEN v_released THEN 0 ELSE p_hold.usage_cached_input_tokens END,
        usage_cache_write_tokens = CASE WHEN v_released THEN 0 ELSE p_hold.usage_cache_write_tokens END,
        usage_reasoning_tokens = CASE WHEN v_released THEN 0 ELSE p_hold.usage_reasoning_tokens END,
        charged_tokens = CASE WHEN v_released THEN NULL ELSE v_charge END,
        cost_micros = CASE WHEN v_released THEN NULL ELSE p_hold.cost_micros END,
        unbilled_tokens = CASE WHEN v_released THEN NULL ELSE v_old.unbilled_tokens + shortfall END
    WHERE h.account_id = p_hold.account_id AND h.hold_id = p_hold.hold_id;
    PERFORM meter_debt_events(p_hold.account_id, v_reservation, p_now);
END;
$$;
