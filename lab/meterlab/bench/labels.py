"""`meter bench --labels`: what labels, token classes and budgets cost the hot path.

One server, three closed-loop scenarios interleaved round after round (order reversed every
other round): "plain" (Reserve→Commit of input and output, no labels), "labelled" (the calls a
product's proxy sends: team, API key, agent and a session of its own as labels, and every token
class at Commit) and "labelled, budgets" (the same calls, on accounts whose team has a tokens
budget and whose API key a cost budget, that none reaches). The ratios to plain are the targets
(>= 0.9); CPU per loop says where the difference goes.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from meterlab.bench import interleaved, seed
from meterlab.bench.report import Report
from meterlab.bench.runner import Options

TARGET = 0.9


async def labels(options: Options) -> Report:
    async def fund(engine: AsyncEngine) -> interleaved.Plan:
        plain = await seed.MANY.fund(engine, options.accounts)
        budgeted = await seed.MANY_BUDGETED.fund(engine, options.accounts)
        return [("plain", "loop", plain), ("labelled", "labelled", plain), ("labelled, budgets", "labelled", budgeted)]

    return await interleaved.interleaved(options, "meter_bench_labels", fund)


def ratios(report: Report) -> str:
    return interleaved.ratios(report, "plain", ["labelled", "labelled, budgets"], TARGET)
