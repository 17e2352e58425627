"""Child processes of a benchmark run: start, stop by pid, and what they cost.

Peak RSS is the child's VmHWM from /proc/<pid>/status, read every time its progress
is polled and once more just before it is stopped. Not ``ru_maxrss``: Linux carries
the high-water mark of the memory the child had before exec, and a child forked
(vforked) by this runner starts with the runner's, which holds every served file.
CPU time comes from the child's rusage (reaped with wait4) and, for any live
process (the broker too), from /proc/<pid>/stat.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench import ROOT

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Exit:
    code: int
    peak_rss_mb: float  # VmHWM, as last read while the child ran
    cpu_s: float  # user + system, the whole life of the child


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_now_mb(pid: int) -> float:
    """VmHWM of a live process: its peak resident set so far."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Child:
    """A child process we started; reaped with wait4 so its rusage is ours to read."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env},
                                         stdout=out, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.log = log
        self.exit: Exit | None = None
        self.peak_rss_mb = 0.0

    def poll(self) -> Exit | None:
        """The exit, once the child has ended; None while it runs."""
        if self.exit is None:
            self.peak_rss_mb = max(self.peak_rss_mb, peak_rss_now_mb(self.pid))
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.exit = Exit(self.proc.returncode, self.peak_rss_mb,
                                 usage.ru_utime + usage.ru_stime)
        return self.exit

    async def wait(self, timeout: float) -> Exit | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 (a pid)
            await asyncio.sleep(0.05)
        return self.exit

    async def stop(self, timeout: float = 60) -> Exit:
        """SIGTERM, then SIGKILL after the timeout; always reaps the child."""
        if self.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            if await self.wait(timeout) is None:
                os.kill(self.pid, signal.SIGKILL)
                await self.wait(30)
        assert self.exit is not None
        return self.exit
