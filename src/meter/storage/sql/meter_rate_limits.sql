-- An account's rate limits: its own where set (SetPlan), its plan's elsewhere (NULL: no limit),
-- from its row (p_account) as the caller read it. The plans' limits come with the call (p_plans and
-- the arrays beside it, from the service's catalog; 0: none), so the database keeps no copy of the
-- catalog.
CREATE OR REPLACE FUNCTION meter_rate_limits(
    p_account accounts, p_plans text[], p_requests_per_minute bigint[], p_tokens_per_minute bigint[],
    p_concurrent_holds bigint[]
)
RETURNS TABLE (requests_per_minute bigint, tokens_per_minute bigint, concurrent_holds bigint)
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(p_account.requests_per_minute,
            nullif(p_requests_per_minute[array_position(p_plans, p_account.plan_id)], 0)),
        coalesce(p_account.tokens_per_minute,
            nullif(p_tokens_per_minute[array_position(p_plans, p_account.plan_id)], 0)),
        coalesce(p_account.concurrent_holds,
            nullif(p_concurrent_holds[array_position(p_plans, p_account.plan_id)], 0))
$$;
