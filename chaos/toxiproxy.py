"""Toxiproxy (github.com/Shopify/toxiproxy, v2): a fault-injecting TCP proxy, driven
through its HTTP API.

``make toxiproxy`` builds its ``server`` binary from the Go module into the
git-ignored cache (:data:`BINARY`). :class:`Toxiproxy` starts it on a free API
port, stopped by its pid; its methods create proxies, enable or disable them, and
add or remove toxics:

- ``latency`` (``latency``, ``jitter`` in ms): every chunk of data waits;
- ``timeout`` (``timeout`` ms, 0: never): data is dropped, and after ``timeout``
  the connection is closed;
- ``reset_peer`` (``timeout`` ms): the connection is reset (RST) after ``timeout``;
- ``bandwidth`` (``rate`` in KB/s): the link is throttled.

A toxic works on one direction: ``upstream`` (client to server) or ``downstream``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from tools import local_kafka

VERSION = "v2.12.0"
MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"
BINARY = local_kafka.CACHE / "toxiproxy" / VERSION / "bin" / "server"
TOXICS = ("latency", "timeout", "reset_peer", "bandwidth")


class ToxiproxyError(RuntimeError):
    pass


class Toxiproxy:
    """One toxiproxy server process and an HTTP client for its API."""

    def __init__(self, binary: Path, log_path: Path) -> None:
        self.binary = binary
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30) -> Toxiproxy:
        if not self.binary.exists():
            raise ToxiproxyError(f"no toxiproxy server at {self.binary}: run `make toxiproxy`")
        self.proc = self._spawn()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ToxiproxyError(f"toxiproxy exited with {self.proc.returncode}; "
                                     f"see {self.log_path}")
            try:
                await self._call("GET", "/version")
                return self
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise ToxiproxyError(f"toxiproxy API not up within {timeout:.0f}s") from None
                await asyncio.sleep(0.1)

    def _spawn(self) -> subprocess.Popen:
        self.port = local_kafka.free_port()
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                [str(self.binary), "-host", "127.0.0.1", "-port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    async def close(self) -> None:
        await self.close_api()
        self.stop()

    async def close_api(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def stop(self) -> None:
        """Stop the server by its pid (SIGTERM, then SIGKILL)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self._http is not None, "start() first"
        async with self._http.request(method, self.api + path, json=body) as response:
            text = await response.text()
            if response.status >= 300:
                raise ToxiproxyError(f"{method} {path}: HTTP {response.status} {text.strip()}")
            return await response.json(content_type=None) if text.strip() else None

    async def create_proxy(self, name: str, listen_port: int, upstream_port: int) -> None:
        await self._call("POST", "/proxies", {
            "name": name, "listen": f"127.0.0.1:{listen_port}",
            "upstream": f"127.0.0.1:{upstream_port}", "enabled": True})

    async def set_enabled(self, proxy: str, enabled: bool) -> None:
        """Disabled: every connection is closed and new ones are refused."""
        await self._call("POST", f"/proxies/{proxy}", {"enabled": enabled})

    async def add_toxic(self, proxy: str, name: str, kind: str, stream: str,
                        **attributes: int) -> None:
        if kind not in TOXICS or stream not in ("upstream", "downstream"):
            raise ValueError(f"toxic {kind!r} on {stream!r}")
        await self._call("POST", f"/proxies/{proxy}/toxics", {
            "name": name, "type": kind, "stream": stream, "toxicity": 1.0,
            "attributes": attributes})

    async def remove_toxic(self, proxy: str, name: str) -> None:
        await self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    async def toxics(self, proxy: str) -> list[dict[str, Any]]:
        return await self._call("GET", f"/proxies/{proxy}/toxics") or []

    async def proxies(self) -> dict[str, Any]:
        return await self._call("GET", "/proxies") or {}

    async def reset(self) -> None:
        """Every proxy enabled, every toxic removed."""
        await self._call("POST", "/reset")
