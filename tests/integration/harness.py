"""What the integration tests share: a real file server, topics, service processes,
and the exactly-once check. No timing assumptions: every wait is on a condition.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from kafka_io import Topics, by_source, create_topics, lag, produce, read_all, unique

__all__ = ["Topics", "by_source", "create_topics", "lag", "produce", "read_all", "unique"]

ROOT = Path(__file__).resolve().parents[2]


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str,
                     every: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)


# -- files served over real HTTP ------------------------------------------------------

@dataclass
class Route:
    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    fail_first: int = 0           # answer the first N requests with fail_status
    fail_status: int = 503
    delay: float = 0.0
    requests: int = 0


class FileServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.inflight = 0       # requests being answered right now
        self.max_inflight = 0

    async def start(self) -> FileServer:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def add(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url(path)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route = self.routes.get(request.match_info["path"])
        if route is None:
            return web.Response(status=404)
        route.requests += 1
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if route.delay:
                await asyncio.sleep(route.delay)
        finally:
            self.inflight -= 1
        if route.requests <= route.fail_first:
            return web.Response(status=route.fail_status, text="injected failure")
        return web.Response(status=route.status, body=route.body, headers=route.headers)


# -- deterministic transaction files ----------------------------------------------------

def make_items(name: str, count: int) -> list[bytes]:
    """Compact JSON objects, as the service writes them: exact big numbers included."""
    return [(f'{{"id":"{name}-{i}","seq":{i},"amount":{10**25 + i},'
             f'"rate":0.100000000000000000000000000001,"memo":"transfer {i} \u2713"}}').encode()
            for i in range(count)]


def encode(items: list[bytes], fmt: str) -> tuple[bytes, dict[str, str]]:
    """A file body in one of the supported formats, with its response headers."""
    if fmt == "array":
        return b"[\n  " + b",\n  ".join(items) + b"\n]\n", {}
    ndjson = b"".join(item + b"\n" for item in items)
    if fmt == "ndjson":
        return ndjson, {}
    if fmt == "gzip-file":
        return gzip.compress(ndjson), {"Content-Type": "application/gzip"}
    if fmt == "gzip-encoding":
        return gzip.compress(ndjson), {"Content-Encoding": "gzip"}
    raise ValueError(fmt)


def assert_exactly_once(outputs: list, expected: dict[str, list[bytes]]) -> None:
    """Each expected URL's items appear exactly once, byte-equal, in file order."""
    got = by_source(outputs)
    unexpected = set(got) - set(expected)
    assert not unexpected, f"outputs from unexpected sources: {sorted(unexpected)[:3]}"
    for url, values in expected.items():
        records = got.get(url, [])
        indexes = [int(dict(r.headers)["index"]) for r in records]
        assert len(records) == len(values), (
            f"{url}: {len(records)} outputs for {len(values)} transactions "
            f"(indexes {sorted(indexes)[:20]})")
        assert indexes == list(range(len(values))), f"{url}: out of order or duplicated"
        assert [r.value for r in records] == values, f"{url}: payload differs"


# -- the service as a real process ---------------------------------------------------------

class ServiceProcess:
    """``python -m app`` in its own process, stopped by its pid."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str) -> None:
        self.env = {**os.environ, **env, "POD_NAME": name}
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> ServiceProcess:
        self.starts += 1
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.alive:
            self.signal(signal.SIGKILL)
            assert self.proc is not None
            self.proc.wait(10)

    async def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait for the exit code."""
        assert self.proc is not None
        if self.alive:
            self.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"{self.log_path.stem} did not stop within {timeout}s")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def service_env(bootstrap: str, topics: Topics, **extra: str) -> dict[str, str]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "INPUT_TOPIC": topics.input,
        "OUTPUT_TOPIC": topics.output,
        "DLQ_TOPIC": topics.dlq,
        "GROUP_ID": topics.group,
        "HTTP_PORT": "0",
        "DOWNLOAD_ALLOW_PRIVATE_NETWORKS": "true",
        "RETRY_BACKOFF_S": "0.05",
        "RETRY_BACKOFF_MAX_S": "0.5",
        "SHUTDOWN_TIMEOUT_S": "10",
        "LOG_LEVEL": "info",
    }
    env.update(extra)
    return env
