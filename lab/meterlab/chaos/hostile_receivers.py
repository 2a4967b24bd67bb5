"""Webhook receivers that misbehave, for the chaos run and the tests: a tarpit (accepts a
connection, reads what is sent, never answers) and a redirector (answers 302 or 307 pointing at
another origin, which counts every request that reaches it: none should)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Tarpit:
    """A TCP server that never answers: meter's sends to it can only time out."""

    accepted: int = 0  # connections, in all
    closed: int = 0  # of which the sender closed (gave up)
    url: str = ""
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def open(self) -> int:
        return self.accepted - self.closed

    async def start(self) -> Tarpit:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/events"
        return self

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        finally:
            self.closed += 1
            self._writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        """Hang up on every connection held (meter's sends end at once), then stop listening."""
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)


@dataclass
class Redirector:
    """POST /302 and /307 answer that status with a Location on another origin (the target)."""

    target_hits: int = 0  # requests that reached the other origin, by any method
    redirected: int = 0
    base_url: str = ""
    target_url: str = ""
    _runners: list[web.AppRunner] = field(default_factory=list)

    def url(self, status: int) -> str:
        return f"{self.base_url}/{status}"

    async def start(self) -> Redirector:
        target = web.Application()
        target.router.add_route("*", "/{tail:.*}", self._target)
        self.target_url = await self._serve(target) + "/stolen"
        redirecting = web.Application()
        redirecting.router.add_post("/{status:30[12378]}", self._redirect)
        self.base_url = await self._serve(redirecting)
        return self

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def _redirect(self, request: web.Request) -> web.Response:
        await request.read()
        self.redirected += 1
        return web.Response(status=int(request.match_info["status"]), headers={"Location": self.target_url})

    async def _target(self, request: web.Request) -> web.Response:
        self.target_hits += 1
        return web.Response(status=200)

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
