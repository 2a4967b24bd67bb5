-- How a hold ends, exactly once: its status becomes p_status ('committed' with a charge and the
-- usage set on p_hold, 'released' or 'expired' with none). The charge comes from the hold's parts
-- in the order it drew them; what they do not cover comes from what the account has available,
-- pool by pool in the order pools are drawn (meter_take), and what nothing pays for becomes debt
-- (the shortfall, returned with the debt after). What a part does not use goes back to its row,
-- paying debt first; what it took from the allowance of a period that has ended, or from a grant
-- that has ended (expired or revoked: meter_end_grant), does not go back: it expires. A hold
-- already given back at expiry ('expired') is charged from what is available. The caller has
-- locked the hold row and read the account's (p_account); this locks the account row and then the
-- bucket rows only when they are needed, in that order; when it changed the debt, the debt's facts
-- follow (meter_debt_events). The call's budgets count it first (meter_settle_budgets: their rows
-- come before the account's in every transaction).
CREATE OR REPLACE FUNCTION meter_settle(
    p_hold holds, p_account accounts, p_charge bigint, p_status text, p_now timestamptz,
    p_caller text, OUT shortfall bigint, OUT debt bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_reservation text := meter_reservation_id(p_hold.account_id, p_hold.hold_id);  -- the ledger's ref
    v_parked boolean := p_hold.status = 'open';  -- its tokens still sit on its rows as held
    v_parts integer := CASE WHEN v_parked THEN cardinality(p_hold.part_pools) ELSE 0 END;
    v_left bigint := p_charge;  -- of the charge, what the parts have not covered yet
    v_used bigint[] := '{}';  -- each part's: charged from it
    v_back bigint[] := '{}';  -- given back to its row
    v_back_total bigint := 0;
    v_expired bigint;  -- given back after its period ended: expires
    v_kinds text[] := '{}';  -- the ledger's entries (meter_hold_entries)
    v_pools text[] := '{}';
    v_amounts bigint[] := '{}';
    v_over bigint;
    v_taken record;
    v_paid record;
    v_i integer;
    v_account_locked boolean := false;
BEGIN
    shortfall := 0;
    debt := p_account.debt;
    IF p_hold.budget_ids IS NOT NULL THEN
        PERFORM meter_settle_budgets(p_hold.account_id, p_hold.budget_periods, p_hold.budget_ids, p_hold.budget_buckets,
            p_hold.budget_held, v_parked, p_charge, CASE WHEN p_status = 'committed' THEN p_hold.cost_micros ELSE 0 END);
    END IF;
    FOR v_i IN 1 .. v_parts LOOP
        v_used[v_i] := least(v_left, p_hold.part_held[v_i]);
        v_left := v_left - v_used[v_i];
        v_back[v_i] := p_hold.part_held[v_i] - v_used[v_i];
        v_expired := 0;
        IF meter_part_ended(p_hold, p_account, v_i, p_now) THEN
            v_expired := v_back[v_i];
            v_back[v_i] := 0;
        END IF;
        v_back_total := v_back_total + v_back[v_i];
        v_kinds := v_kinds || ARRAY['usage', 'expiry'];
        v_pools := v_pools || ARRAY[p_hold.part_pools[v_i], p_hold.part_pools[v_i]];
        v_amounts := v_amounts || ARRAY[-v_used[v_i], -v_expired];
    END LOOP;
    v_over := v_left;
    IF v_over > 0 OR (debt > 0 AND v_back_total > 0) THEN
        PERFORM 1 FROM accounts AS a WHERE a.account_id = p_hold.account_id FOR UPDATE;  -- lock order
        v_account_locked := true;
    END IF;
    IF v_over > 0 THEN
        PERFORM meter_lock_buckets(p_hold.account_id);
        v_taken := meter_take(p_hold.account_id, v_over, p_now);
        shortfall := v_taken.shortfall;
        FOR v_i IN 1 .. cardinality(v_taken.part_pools) LOOP
            v_kinds := v_kinds || 'usage'::text;
            v_pools := v_pools || v_taken.part_pools[v_i];
            v_amounts := v_amounts || -v_taken.part_amounts[v_i];
        END LOOP;
        IF shortfall > 0 THEN
            UPDATE accounts AS a SET debt = a.debt + shortfall, updated_at = p_now
            WHERE a.account_id = p_hold.account_id
            RETURNING a.debt INTO debt;
            v_kinds := v_kinds || 'usage'::text;
            v_pools := v_pools || 'debt'::text;
            v_amounts := v_amounts || -shortfall;
        END IF;
    ELSIF v_account_locked THEN
        v_paid := meter_pay_debt(p_hold.account_id, p_hold.part_pools, v_back, NULL, v_reservation, p_now, p_caller);
        v_back := v_paid.amounts_left;
        debt := v_paid.debt_left;
    END IF;
    PERFORM meter_hold_entries(p_hold.account_id, v_reservation, p_now, p_caller, v_kinds, v_pools, v_amounts);
    UPDATE holds AS h SET status = p_status, settled_at = p_now, usage_input_tokens = p_hold.usage_input_tokens,
        usage_output_tokens = p_hold.usage_output_tokens, usage_cached_input_tokens = p_hold.usage_cached_input_tokens,
        usage_cache_write_tokens = p_hold.usage_cache_write_tokens,
        usage_reasoning_tokens = p_hold.usage_reasoning_tokens, charged_tokens = p_hold.charged_tokens,
        cost_micros = p_hold.cost_micros, unbilled_tokens = CASE WHEN p_status = 'committed' THEN shortfall END,
        late = p_hold.late
    WHERE h.account_id = p_hold.account_id AND h.hold_id = p_hold.hold_id;
    -- The hold's balance rows last, so that they stay locked for as short a time as possible: a
    -- Reserve of the account may be waiting for one. What went beyond the parts counts as used on
    -- the first part's row (the allowance's when it has none).
    IF v_parts > 0 THEN
        UPDATE buckets AS b SET available = b.available + p.back, held = b.held - p.held,
            used = b.used + p.used + CASE WHEN p.n = 1 THEN v_over ELSE 0 END,
            open_holds = b.open_holds - CASE WHEN p.n = 1 THEN 1 ELSE 0 END
        FROM unnest(p_hold.part_pools, p_hold.part_held, v_used, v_back) WITH ORDINALITY AS p (pool, held, used, back, n)
        WHERE b.account_id = p_hold.account_id AND b.pool = p.pool AND b.bucket = p_hold.part_bucket;
    ELSIF v_over > 0 THEN
        UPDATE buckets AS b SET used = b.used + v_over
        WHERE b.account_id = p_hold.account_id AND b.pool = 'allowance' AND b.bucket = p_hold.part_bucket;
    END IF;
    IF v_account_locked THEN
        PERFORM meter_debt_events(p_hold.account_id, v_reservation, p_now);
    END IF;
END;
$$;
