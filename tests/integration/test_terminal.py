"""What a person reads of `meter serve` and `meter migrate` at a terminal: where meter listens,
why it is not ready yet (once per reason, naming the setting to check), "ready" only once it
serves, and a migration in one line instead of every migration's docstring."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from meter.storage.migrate import head_revision
from meterlab.testbed import free_port
from support import run_cli


async def lines_until(process: asyncio.subprocess.Process, wanted: str, within: float = 60) -> list[str]:
    """stdout's lines up to the first containing `wanted` (failing after `within` seconds)."""
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + within
    while not any(wanted in line for line in seen):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{wanted!r} not printed; printed: {seen}"
        line = await asyncio.wait_for(process.stdout.readline(), remaining)
        assert line, f"meter serve ended before printing {wanted!r}; printed: {seen}"
        seen.append(line.decode().rstrip("\n"))
    return seen


async def serve(database_url: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "METER_DATABASE_URL": database_url,
        "METER_GRPC_ADDR": f"127.0.0.1:{free_port()}",
        "METER_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "METER_CONNECT_ADDR": "off",
        "METER_LOG_LEVEL": "WARNING",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meter.cli", "serve", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def stop(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGINT)
    return await asyncio.wait_for(process.wait(), 30)


async def test_not_ready_says_why_and_names_the_setting_and_never_says_ready() -> None:
    process = await serve(f"postgresql://meter:secret@127.0.0.1:{free_port()}/meter")
    try:
        printed = await lines_until(process, "not ready yet: database not reachable")
    finally:
        assert await stop(process) == 0
    assert printed[0].startswith("meter: gRPC on 127.0.0.1:")
    assert "(check METER_DATABASE_URL); retrying" in printed[-1] and "secret" not in printed[-1]
    assert not any(line.startswith("meter: ready") for line in printed)


async def test_ready_is_said_once_calls_are_served(database_url: str) -> None:
    process = await serve(database_url)
    try:
        printed = await lines_until(process, "meter: ready")
    finally:
        assert await stop(process) == 0
    assert printed[-1] == "meter: ready: serving calls (Ctrl-C stops; calls in flight finish first)"


async def test_a_migration_is_one_line(empty_database: str) -> None:
    code, out, err = await run_cli("migrate", env={"METER_DATABASE_URL": empty_database, "METER_LOG_LEVEL": "INFO"})
    assert code == 0, err
    assert f"database schema migrated from empty to {head_revision()}" in err
    assert "Running upgrade" not in err and "squashed" not in err  # no migration's docstring
    code, out, err = await run_cli("migrate", env={"METER_DATABASE_URL": empty_database, "METER_LOG_LEVEL": "INFO"})
    assert (code, "migrated" in err) == (0, False)  # nothing to do, nothing said but that
    assert out.strip() == "meter: schema is up to date"
