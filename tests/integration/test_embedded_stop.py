"""`meter serve` on its embedded PostgreSQL stops it whatever stops meter: SIGHUP (a closed
terminal) drains like SIGTERM, and a meter that died without stopping (SIGKILL) does not keep a
later one from stopping it. What was acknowledged before is there after."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import psutil

from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc
from meterlab.testbed import ServerProcess
from support import eventually, new_id


def postmaster_pid(data_dir: Path) -> int | None:
    """The embedded server's pid (the first line of its postmaster.pid), None once it stopped."""
    try:
        return int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    except FileNotFoundError:
        return None


async def running(pid: int) -> bool:
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


STARTED: list[ServerProcess] = []


async def serve(data_dir: Path) -> ServerProcess:
    server = ServerProcess("", {"METER_DATA_DIR": str(data_dir)})
    STARTED.append(server)
    await server.ready(within=120)
    return server


async def hang_up(server: ServerProcess) -> int:
    assert server.process is not None
    server.process.send_signal(signal.SIGHUP)
    return await asyncio.to_thread(server.process.wait, 60)


async def test_sighup_drains_and_stops_the_embedded_postgresql_even_after_a_killed_meter(tmp_path: Path) -> None:
    try:
        await _sighup_and_a_killed_meter(tmp_path)
    finally:  # whatever failed, nothing is left running
        for server in STARTED:
            server.kill()
        if (pid := postmaster_pid(tmp_path)) is not None and psutil.pid_exists(pid):
            psutil.Process(pid).send_signal(signal.SIGINT)  # a fast shutdown


async def _sighup_and_a_killed_meter(tmp_path: Path) -> None:
    account = new_id()
    first = await serve(tmp_path)
    async with grpc.aio.insecure_channel(first.address) as channel:
        stub = meter_pb2_grpc.MeterServiceStub(channel)
        await stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
        adjust = pb.AdjustRequest(
            account_id=account, pool=pb.POOL_PURCHASED, delta=700, reason="kept", request_id=new_id()
        )
        await stub.Adjust(adjust)
    database = postmaster_pid(tmp_path)
    assert database is not None
    first.kill()  # dies without stopping anything: the embedded server runs on, its user still counted

    second = await serve(tmp_path)  # finds the server running and uses it
    assert postmaster_pid(tmp_path) == database
    assert await hang_up(second) == 0  # drained and exited, not killed by the signal
    await eventually(lambda: running(database), lambda alive: not alive)

    third = await serve(tmp_path)  # the data is all there
    try:
        async with grpc.aio.insecure_channel(third.address) as channel:
            stub = meter_pb2_grpc.MeterServiceStub(channel)
            balance = (await stub.GetBalance(pb.GetBalanceRequest(account_id=account))).balance
        assert (balance.plan_id, balance.purchased_remaining) == ("starter", 700)
    finally:
        restarted = postmaster_pid(tmp_path)
        assert await hang_up(third) == 0
    assert restarted is not None
    await eventually(lambda: running(restarted), lambda alive: not alive)
