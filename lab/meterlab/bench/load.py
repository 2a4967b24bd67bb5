"""A load-generator process: `callers` concurrent loops of one scenario against one server, for
a fixed time (closed loop) or at a fixed rate (open loop). Runs in its own process so that the
load does not share an interpreter (or a GIL) with the server or with the other generators."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from array import array
from collections import Counter
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc
from meterlab.bench.seed import call_labels


@dataclass
class Job:
    scenario: str  # ceiling | loop | labelled | mixed
    target: str
    accounts: list[str]
    callers: int
    seconds: float
    rate_per_second: float = 0.0  # > 0: open loop at this rate instead of as fast as possible
    seed: int = 0
    max_loops: int = 0  # > 0: stop after starting this many loops (closed loop), whatever the time
    token: str = ""  # a caller's bearer token, sent with every call when set


@dataclass
class Samples:
    """Latencies in seconds by RPC, completed loops and errors by code."""

    latencies: dict[str, array] = field(default_factory=dict)
    loops: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0

    def record(self, rpc: str, seconds: float) -> None:
        self.latencies.setdefault(rpc, array("d")).append(seconds)


class _Calls:
    def __init__(self, channel: grpc.aio.Channel, samples: Samples, token: str = "") -> None:
        self.meter = meter_pb2_grpc.MeterServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.samples = samples
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None

    async def timed(self, rpc: str, call: object) -> object:
        start = time.perf_counter()
        response = await call  # type: ignore[misc]
        self.samples.record(rpc, time.perf_counter() - start)
        return response

    async def loop(self, scenario: str, account: str, dice: float) -> None:
        if scenario == "ceiling":
            await self.timed("Health.Check", self.health.Check(health_pb2.HealthCheckRequest()))
            return
        if scenario == "mixed" and dice < 0.1:
            request = pb.GetBalanceRequest(account_id=account)
            await self.timed("GetBalance", self.meter.GetBalance(request, metadata=self.metadata))
            return
        labelled = scenario == "labelled"
        held = await self.timed(
            "Reserve",
            self.meter.Reserve(
                pb.ReserveRequest(
                    account_id=account,
                    request_id=uuid.uuid4().hex,
                    model="basic",
                    input_tokens=100,
                    max_output_tokens=100,
                    labels=call_labels(account, dice) if labelled else None,
                ),
                metadata=self.metadata,
            ),
        )
        reservation = held.reservation_id  # type: ignore[attr-defined]
        if scenario == "mixed" and dice < 0.2:
            release = pb.ReleaseRequest(reservation_id=reservation)
            await self.timed("Release", self.meter.Release(release, metadata=self.metadata))
        else:
            commit = pb.CommitRequest(reservation_id=reservation, input_tokens=100, output_tokens=40)
            if labelled:  # every token class, and the labels above summed by team, agent and key
                commit = pb.CommitRequest(
                    reservation_id=reservation,
                    input_tokens=40,
                    cached_input_tokens=50,
                    cache_write_tokens=10,
                    output_tokens=30,
                    reasoning_tokens=10,
                )
            await self.timed("Commit", self.meter.Commit(commit, metadata=self.metadata))


async def run_async(job: Job) -> Samples:
    samples = Samples()
    rng = random.Random(job.seed)
    async with grpc.aio.insecure_channel(job.target) as channel:
        calls = _Calls(channel, samples, job.token)
        await channel.channel_ready()
        start = time.perf_counter()
        deadline = start + job.seconds

        async def one() -> None:
            try:
                await calls.loop(job.scenario, rng.choice(job.accounts) if job.accounts else "", rng.random())
                samples.loops += 1
            except grpc.aio.AioRpcError as error:
                samples.errors[error.code().name] += 1

        started = 0

        async def closed_loop() -> None:
            nonlocal started
            while time.perf_counter() < deadline and not (job.max_loops and started >= job.max_loops):
                started += 1
                await one()

        async def open_loop() -> None:
            interval = job.callers / job.rate_per_second
            next_start = time.perf_counter() + rng.random() * interval
            pending: set[asyncio.Task[None]] = set()
            while next_start < deadline:
                await asyncio.sleep(max(0.0, next_start - time.perf_counter()))
                task = asyncio.create_task(one())
                pending.add(task)
                task.add_done_callback(pending.discard)
                next_start += interval
            await asyncio.gather(*pending)

        await asyncio.gather(*(open_loop() if job.rate_per_second else closed_loop() for _ in range(job.callers)))
        samples.elapsed = time.perf_counter() - start
    return samples


def run(job: Job) -> Samples:
    """The process entry point."""
    return asyncio.run(run_async(job))
