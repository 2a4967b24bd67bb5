-- What a Commit's budgets stand at once it counted (p_ids, counting the periods starting at
-- p_periods): for each, its cap, what its period used and holds (summed over its rows, read
-- without a lock) and the warning levels the period told (as bits). The service tells a level
-- only when these show one not told yet, so the common Commit writes nothing more. PL/pgSQL, so
-- that its query's plan is kept across calls.
CREATE OR REPLACE FUNCTION meter_budget_states(p_account text, p_ids bigint[], p_periods timestamptz[])
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
        SELECT jsonb_agg(jsonb_build_object('budget_id', g.budget_id, 'cap', g.cap, 'used', t.used, 'held', t.held,
            'announced', CASE WHEN g.warned_period_start = g.period_start THEN g.warned_levels ELSE 0 END)
            ORDER BY g.budget_id)
        FROM budgets AS g
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(b.used), 0) AS used, coalesce(sum(b.held), 0) AS held FROM budget_buckets AS b
            WHERE b.account_id = g.account_id AND b.budget_id = g.budget_id
        ) AS t
        WHERE g.account_id = p_account AND g.budget_id = ANY(p_ids)
            AND g.period_start = p_periods[array_position(p_ids, g.budget_id)]
    );
END;
$$;
