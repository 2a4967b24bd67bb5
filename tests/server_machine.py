"""What every reference model (a hypothesis state machine) needs to call the real server:
hypothesis runs each example in a worker thread, so a machine has its own event loop (the thread's:
grpc.aio and aiohttp look it up), one channel to the server at `address`, and closes both when
the example ends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import ClassVar, TypeVar

import grpc
from hypothesis.stateful import RuleBasedStateMachine

from meter.v1 import meter_pb2_grpc

T = TypeVar("T")


class ServerMachine(RuleBasedStateMachine):
    address: ClassVar[str]  # the server's gRPC address (each model's machine sets it)

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.channel = self.run(self._open())
        self.stub = meter_pb2_grpc.MeterServiceStub(self.channel)

    async def _open(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address)

    def run(self, call: Awaitable[T]) -> T:
        return self.loop.run_until_complete(call)

    def teardown(self) -> None:
        self.run(self.channel.close())
        asyncio.set_event_loop(None)
        self.loop.close()
