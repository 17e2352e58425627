"""The chaos run's file server: a :class:`~chaos.workload.Workload` served on 127.0.0.1
with each file's planned faults and server-wide 5xx bursts."""

from __future__ import annotations

import asyncio
import collections
import time

from aiohttp import web

from chaos.workload import Workload
from tools import fileserver
from tools.fileserver import FileServer


class FaultyServer:
    """Serves a Workload on 127.0.0.1 (tools/fileserver.py) with its per-file faults and
    server-wide 5xx bursts.

    ``counts`` tallies requests and every fault injected, by kind.
    """

    def __init__(self, workload: Workload, stall_s: float) -> None:
        self.workload = workload
        self.stall_s = stall_s
        self.counts: collections.Counter[str] = collections.Counter()
        self._requests: collections.Counter[int] = collections.Counter()
        self._burst_until = 0.0
        self._server = FileServer(fallback=self._handle, backlog=512)

    @property
    def base_url(self) -> str:
        return self._server.base_url

    async def start(self) -> FaultyServer:
        await self._server.start()
        return self

    async def close(self) -> None:
        await self._server.close()

    def burst(self, seconds: float) -> None:
        """Answer every request with 503 for ``seconds`` (a flapping backend)."""
        self._burst_until = time.monotonic() + seconds
        self.counts["bursts"] += 1

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        try:
            n = int(path.removeprefix("f/").split(".", 1)[0])
        except ValueError:
            return web.Response(status=404)
        spec = self.workload.spec(n)
        if path != spec.path:
            return web.Response(status=404)
        self.counts["requests"] += 1
        if time.monotonic() < self._burst_until:
            self.counts["burst_503"] += 1
            return web.Response(status=503, text="burst")
        attempt = self._requests[n]
        self._requests[n] += 1
        if attempt < len(spec.faults):
            kind = spec.faults[attempt]
            self.counts[f"fault_{kind}"] += 1
            return await self._fault(request, kind, n)
        if spec.poison == "http_404":
            return web.Response(status=404, text="gone for good")
        if spec.delay:
            self.counts["delayed"] += 1
            await asyncio.sleep(spec.delay)
        body, headers = self.workload.body(n)
        self.counts["served"] += 1
        return web.Response(body=body, headers=dict(headers))

    async def _fault(self, request: web.Request, kind: str, n: int) -> web.StreamResponse:
        if kind.isdigit():
            return web.Response(status=int(kind), text="injected")
        if kind == "stall":  # past the client's read timeout; it gives up first
            return await fileserver.stall(self.stall_s)
        if kind == "reset":
            return fileserver.reset(request)
        # truncated: promise more than is sent, then hang up. Always strictly less: a
        # 404 file's body is empty, and a whole empty body would be a valid empty file.
        body, headers = self.workload.body(n)
        return await fileserver.truncated(request, body, dict(headers), max(len(body), 64))
