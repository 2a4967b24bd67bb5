-- What the role meter serves with may do (run by `meter migrate` with METER_SERVICE_ROLE, as the
-- schema's owner): read every table; write the tables of what Python decides (payments as
-- recorded, Stripe events, webhook endpoints and deliveries, checkout sessions, adjustments asked
-- for, rate counts) and, of an account, only its plan, billing and warnings. The ledger, the bucket
-- rows, the holds, the budgets' rows, the events and an account's money (its debt, its allowance
-- month and what that month was granted) it may not write at all: only the SQL functions that move
-- tokens do, running as the owner (SECURITY DEFINER). Everything once granted is revoked first, so
-- a role's rights are exactly these after every migration.
CREATE OR REPLACE FUNCTION meter_grant_service_role(p_role text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_table text;
BEGIN
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I', current_schema(), p_role);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), p_role);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO %I', current_schema(), p_role);
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO %I', current_schema(), p_role);
    EXECUTE format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA %I TO %I', current_schema(), p_role);
    FOREACH v_table IN ARRAY ARRAY['adjustments', 'purchases', 'pack_payments', 'refused_purchases',
        'subscription_payments', 'checkout_sessions', 'webhook_events', 'waiting_requests', 'webhook_endpoints',
        'webhook_deliveries', 'caller_rate_counts'] LOOP
        EXECUTE format('GRANT INSERT, UPDATE, DELETE ON %I TO %I', v_table, p_role);
    END LOOP;
    EXECUTE format('GRANT UPDATE (plan_id, monthly_allowance, month_anchor, billing_period_start, '
        'billing_period_end, paid_through, allowance_after_paid, subscription_ref, plan_event_time, '
        'requests_per_minute, tokens_per_minute, concurrent_holds, expired_holds, rollover_cap, rollover_days, '
        'subscription_status, grace_until, warned_levels, warned_period_start, updated_at) ON accounts TO %I', p_role);
END;
$$;
