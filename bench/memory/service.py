"""The service under test for the memory benchmark: ``python -m app`` from a checkout.

The checkout's own code runs (cwd and PYTHONPATH are the checkout) on this
interpreter; its settings are its defaults except the ones the benchmark needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

# Run inside the checkout: which app is imported, the biggest file it holds in memory
# (MAX_FILE_BYTES, or SPOOL_THRESHOLD_BYTES where bigger files are spooled) and the
# names of its settings (so none leaks in from this shell).
_DESCRIBE = """
import dataclasses, json, app, app.config as c
f = c.Settings.__dataclass_fields__
held = f.get("spool_threshold_bytes", f["max_file_bytes"]).default
print(json.dumps({"app": app.__file__,
                  "max_file_bytes": min(f["max_file_bytes"].default, held),
                  "max_buffered_bytes":
                      c.Settings.__dataclass_fields__["max_buffered_bytes"].default,
                  "settings": [c.env_name(f) for f in dataclasses.fields(c.Settings)]}))
"""


def base_env(source: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return {**env, "PYTHONPATH": str(source)}


def describe(source: Path) -> dict:
    """The checkout's app (checked to be the one in ``source``), its defaults, its commit."""
    done = subprocess.run([sys.executable, "-c", _DESCRIBE], cwd=source, env=base_env(source),
                          capture_output=True, text=True, check=True)
    found = json.loads(done.stdout)
    if not Path(found["app"]).resolve().is_relative_to(source.resolve()):
        raise SystemExit(f"bench-memory: {source} imports app from {found['app']}")
    found["commit"] = _git(source, "rev-parse", "HEAD")
    found["dirty"] = bool(_git(source, "status", "--porcelain", "--untracked-files=no"))
    return found


def _git(source: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def service_env(source: Path, settings: list[str], wanted: dict[str, str]) -> dict[str, str]:
    """This shell's environment without any of the service's settings, plus ``wanted``."""
    names = set(settings) | {name + "_FILE" for name in settings}
    env = {k: v for k, v in base_env(source).items() if k not in names}
    return {**env, **wanted}


class Service:
    """One ``python -m app`` child, stopped by its pid."""

    def __init__(self, source: Path, env: dict[str, str], log: Path) -> None:
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=source, env=env,
                                         stdout=out, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.log = log

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def wait_ready(self, port: int, timeout: float) -> None:
        """Until /readyz answers 200 (group joined, partitions assigned)."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{port}/readyz"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise RuntimeError(f"service exited with {self.proc.returncode} "
                                       f"before it was ready; see {self.log}")
                try:
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            return
                except (TimeoutError, aiohttp.ClientError):
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"service not ready within {timeout:.0f}s; see {self.log}")

    async def stop(self, timeout: float) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (negative: a signal)."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:  # noqa: ASYNC110 (a pid)
                await asyncio.sleep(0.05)
            if self.alive():
                os.kill(self.pid, signal.SIGKILL)
        return self.proc.wait()
