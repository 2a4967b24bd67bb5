-- Take back p_tokens of a payment a refund or dispute reverses (p_kind 'refund' or
-- 'dispute_freeze'), the account row locked. A pack's tokens come out of the purchased pool, or,
-- for a pack that expires, out of its own grant, then out of what had expired from that grant
-- (taken back from nothing, counted as claimed). A
-- subscription invoice's come, in this order, out of its allowance months not yet begun (withheld
-- from their grants, its last months first: as if the paid year were shorter), out of the current
-- month's allowance while the invoice pays for that month, out of what its ended months left
-- unused (expired already: taken back from nothing, counted as claimed), and out of what a
-- cancellation converted, or months' ends rolled over, of its months into grants
-- (meter_take_from_grants). What none of those covers
-- was spent: it becomes debt. Writes the ledger (the pool's part, noted with the payment, and the
-- debt's) and the payment's bookkeeping; a freeze remembers what it withheld, what it took from
-- grants and what became debt, which a won dispute gives back (meter_give_back). Returns each part.
CREATE OR REPLACE FUNCTION meter_take_back(
    p_account text, p_payment_kind text, p_payment_ref text, p_tokens bigint, p_kind text, p_ref text,
    p_now timestamptz, p_caller text,
    OUT withheld bigint, OUT from_pool bigint, OUT from_cover bigint, OUT to_debt bigint
) LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    v_account accounts%ROWTYPE;
    v_payment subscription_payments%ROWTYPE;
    v_purchase purchases%ROWTYPE;
    v_pool text := CASE WHEN p_payment_kind = 'pack' THEN 'purchased' ELSE 'allowance' END;
    v_left bigint := p_tokens;
    v_available bigint;
    v_prefix text;
    v_granted bigint;
    v_from_grants bigint := 0;  -- of from_pool, what came from those grants (their entries written)
    v_from_pool bigint;
BEGIN
    withheld := 0;
    from_pool := 0;
    from_cover := 0;
    SELECT * INTO v_account FROM accounts AS a WHERE a.account_id = p_account;
    IF p_payment_kind = 'pack' THEN
        SELECT * INTO v_purchase FROM purchases AS p
        WHERE p.account_id = p_account AND p.payment_ref = p_payment_ref FOR UPDATE;
        v_pool := coalesce('grant:' || v_purchase.grant_id, 'purchased');
    END IF;
    IF p_payment_kind = 'invoice' THEN
        SELECT * INTO v_payment FROM subscription_payments AS s
        WHERE s.account_id = p_account AND s.invoice_ref = p_payment_ref FOR UPDATE;
        IF v_payment.months > 0 THEN  -- its months that begin after the current one
            withheld := greatest(0, least(v_left,
                meter_tokens_to_come(v_payment, v_account.period_end) - v_payment.withheld_tokens));
            v_left := v_left - withheld;
        END IF;
    END IF;
    IF v_left > 0 AND (p_payment_kind = 'pack' OR (v_payment.period_start <= v_account.period_start
        AND v_account.period_start < v_payment.period_end)) THEN
        PERFORM meter_lock_buckets(p_account);
        SELECT coalesce(sum(b.available), 0)::bigint INTO v_available FROM buckets AS b
        WHERE b.account_id = p_account AND b.pool = v_pool;
        from_pool := least(v_left, v_available);
        PERFORM meter_spread(p_account, v_pool, v_available - from_pool);
        v_left := v_left - from_pool;
    END IF;
    IF v_left > 0 AND p_payment_kind = 'invoice' THEN
        SELECT least(v_left, greatest(0, coalesce(max(s.unused_at_end), 0) - coalesce(sum(s.cover_claimed), 0)))
        INTO from_cover
        FROM subscription_payments AS s WHERE s.account_id = p_account AND s.period_start = v_payment.period_start;
        v_left := v_left - from_cover;
        -- What a cancellation converted, or months' ends rolled over, of the months it paid for.
        FOREACH v_prefix IN ARRAY ARRAY['converted:', 'rollover:'] LOOP
            EXIT WHEN v_left = 0;
            v_granted := meter_take_from_grants(p_account, v_prefix || p_payment_ref || ':', v_left, p_kind, p_ref,
                p_payment_ref, p_now, p_caller);
            from_pool := from_pool + v_granted;
            v_from_grants := v_from_grants + v_granted;
            v_left := v_left - v_granted;
        END LOOP;
    ELSIF v_left > 0 AND v_purchase.grant_id IS NOT NULL THEN
        SELECT least(v_left, greatest(0, coalesce(-sum(l.amount), 0) - v_purchase.cover_claimed)) INTO from_cover
        FROM ledger_entries AS l
        WHERE l.account_id = p_account AND l.pool = v_pool AND l.kind IN ('expiry', 'revocation');
        v_left := v_left - from_cover;
    END IF;
    to_debt := v_left;
    v_from_pool := from_pool - v_from_grants;
    INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount, ref, note)
    SELECT p_account, p_now, p_caller, p_kind, e.pool, e.amount, p_ref, e.note
    FROM (VALUES (v_pool, -v_from_pool, p_payment_ref), ('debt', -to_debt, NULL)) AS e (pool, amount, note)
    WHERE e.amount <> 0;
    IF to_debt > 0 THEN
        UPDATE accounts AS a SET debt = a.debt + to_debt WHERE a.account_id = p_account;
    END IF;
    IF p_payment_kind = 'pack' THEN
        UPDATE purchases AS p SET cover_claimed = p.cover_claimed + from_cover,
            frozen_debt = p.frozen_debt + CASE WHEN p_kind = 'dispute_freeze' THEN to_debt ELSE 0 END,
            frozen_cover = p.frozen_cover + CASE WHEN p_kind = 'dispute_freeze' THEN from_cover ELSE 0 END
        WHERE p.account_id = p_account AND p.payment_ref = p_payment_ref;
    ELSIF p_payment_kind = 'invoice' THEN
        UPDATE subscription_payments AS s SET withheld_tokens = s.withheld_tokens + withheld,
            cover_claimed = s.cover_claimed + from_cover,
            frozen_debt = s.frozen_debt + CASE WHEN p_kind = 'dispute_freeze' THEN to_debt ELSE 0 END,
            frozen_withheld = s.frozen_withheld + CASE WHEN p_kind = 'dispute_freeze' THEN withheld ELSE 0 END,
            frozen_cover = s.frozen_cover + CASE WHEN p_kind = 'dispute_freeze' THEN from_cover ELSE 0 END,
            frozen_granted = s.frozen_granted + CASE WHEN p_kind = 'dispute_freeze' THEN v_from_grants ELSE 0 END
        WHERE s.account_id = p_account AND s.invoice_ref = p_payment_ref;
    END IF;
END;
$$;
