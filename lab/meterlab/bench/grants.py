"""`meter bench --grants`: what drawing from grants costs the hot path.

One server, two closed-loop scenarios interleaved round after round: "many accounts" (each
account's tokens in its purchased pool, as the default run's) and "many accounts, five grants"
(each account also has five live grants of its own, with different expiries: every Reserve finds
the first in the drawing order among six pools and 96 rows). The ratio is the target (>= 0.9).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meterlab.bench import interleaved, seed
from meterlab.bench.report import Report
from meterlab.bench.runner import Options

TARGET = 0.9
GRANTED = seed.Accounts("bench-grants-", many=True)

# Five grants per account, none of which runs out during a run: expiring in 30, 60 and 90 days,
# and two that never expire (drawn after the purchased pool, which is older).
_GRANTS = """
SELECT g.outcome FROM unnest(CAST(:accounts AS text[])) AS a (account_id),
    generate_series(1, 5) AS n,
    LATERAL meter_grant(a.account_id, 'bench-grant-' || n, 'promotion', CAST(:tokens AS bigint), 0,
        CASE WHEN n <= 3 THEN now() + make_interval(days => 30 * n) END, 'bench', now(), 'meter-bench') AS g
"""


async def grants(options: Options) -> Report:
    async def fund(engine: AsyncEngine) -> interleaved.Plan:
        plain = await seed.MANY.fund(engine, options.accounts)
        granted = await GRANTED.fund(engine, options.accounts)
        async with engine.begin() as connection:
            await connection.execute(text(_GRANTS), {"accounts": granted, "tokens": seed.FUNDING_TOKENS})
        return [("many accounts", "loop", plain), ("many accounts, five grants", "loop", granted)]

    return await interleaved.interleaved(options, "meter_bench_grants", fund)


def ratios(report: Report) -> str:
    return interleaved.ratios(report, "many accounts", ["many accounts, five grants"], TARGET)
