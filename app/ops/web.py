"""Health, readiness and metrics over HTTP, in the service's own event loop."""

from __future__ import annotations

import time
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from app.ops.stats import Stats


class Watched(Protocol):
    """What the endpoints need to know about the service."""

    stats: Stats
    last_progress: float   # time.monotonic() of the poll loop's last turn
    polling: bool          # the poll loop has started (before it: waiting for Kafka)
    stall_after: float

    @property
    def ready(self) -> bool: ...


def health(service: Watched) -> tuple[int, str]:
    """Alive unless really stuck: this answer shows the event loop turns; the poll loop
    must turn too once it runs. Waiting with backoff for Kafka at start is healthy:
    restarting the pod would not bring Kafka back sooner."""
    if not service.polling:
        return 200, "ok: waiting for Kafka\n"
    stalled = time.monotonic() - service.last_progress
    if stalled > service.stall_after:
        return 503, f"poll loop stalled for {stalled:.0f}s\n"
    return 200, "ok\n"


def readiness(service: Watched) -> tuple[int, str]:
    return (200, "ready\n") if service.ready else (503, "not ready\n")


def make_app(service: Watched) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        status, text = health(service)
        return web.Response(status=status, text=text)

    async def readyz(_: web.Request) -> web.Response:
        status, text = readiness(service)
        return web.Response(status=status, text=text)

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=service.stats.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(service: Watched, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(service), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
