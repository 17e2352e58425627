"""Child processes that tests, chaos, bench and the demo start, ``python -m app`` above all.

A :class:`ChildProcess` runs a command from the repository root with its output
appended to one log file kept across restarts, and is signalled, stopped and reaped
by its pid (with ``wait4``, so its CPU time is known; its peak RSS is read from
/proc while it runs). The service logs one JSON object per line; :func:`json_events`
and :meth:`ChildProcess.events` pick the lines whose ``event`` field is wanted, so
no caller matches on message text.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def app_process(env: dict[str, str], log_dir: Path, name: str) -> ChildProcess:
    """``python -m app`` as pod ``name``, logging to ``log_dir/<name>.log``."""
    return ChildProcess(python_module("app"), {**env, "POD_NAME": name}, log_dir / f"{name}.log")


def json_events(lines: Iterable[str], *names: str) -> list[dict[str, Any]]:
    """The JSON log lines whose ``event`` is one of ``names`` (any event if none), in order.
    Other lines (text, a traceback, a marker) are skipped."""
    found = []
    for line in lines:
        if not line.startswith("{") or (names and not any(n in line for n in names)):
            continue  # cheap test first: a chaos copier's log holds many lines
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "event" in doc and (not names or doc["event"] in names):
            found.append(doc)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def handles_signal(pid: int, sig: signal.Signals) -> bool:
    """The live process has a handler for ``sig`` (Linux: SigCgt in /proc/PID/status).
    Python's own SIGINT handler says its interpreter has started."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    except OSError:
        pass
    return False


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a live process: its peak resident set so far. Not ``ru_maxrss``: Linux
    carries over the high-water mark of the parent's memory from before exec."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class ChildProcess:
    """One child process, stopped by its pid; its log is kept across restarts."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path,
                 new_session: bool = False) -> None:
        self.argv = argv
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.name = log_path.stem
        self.new_session = new_session  # not in the caller's process group (Ctrl-C)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.started_at_byte = 0      # where the latest start's output begins in the log
        self.paused = False           # SIGSTOPped right now
        self.exit_codes: list[int] = []
        self.cpu_s = 0.0              # user + system, the whole life of the latest start
        self.peak_rss_mb = 0.0        # VmHWM, as last read while it ran

    def start(self) -> ChildProcess:
        assert not self.alive, f"{self.name} is already running"
        self.starts += 1
        self.started_at_byte = self.log_size()
        self.cpu_s = self.peak_rss_mb = 0.0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         start_new_session=self.new_session)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self.poll()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.poll() is None

    def poll(self, block: bool = False) -> int | None:
        """The exit code once it has ended (reaped here, with its rusage); None while it runs."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return None if proc is None else proc.returncode
        self.peak_rss_mb = max(self.peak_rss_mb, peak_rss_mb(proc.pid))
        try:
            pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere
            return proc.poll()
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            self.cpu_s = usage.ru_utime + usage.ru_stime
            self.exit_codes.append(proc.returncode)
        return proc.returncode

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """kill -9 and reap it."""
        if self.alive:
            self.signal(signal.SIGKILL)
            self.poll(block=True)
        self.paused = False

    async def wait(self, timeout: float) -> int | None:
        """Its exit code once it ends; None if it still runs after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 (a pid)
            await asyncio.sleep(0.05)
        return self.poll()

    async def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait for its exit code; None if it did not exit in time (it is
        killed then)."""
        assert self.proc is not None
        if self.alive:
            self.signal(signal.SIGTERM)
        code = await self.wait(timeout)
        if code is None:
            self.kill()
        return code

    def note(self, line: str) -> None:
        """Append a line of our own to its log (read by people, skipped by events())."""
        with open(self.log_path, "ab") as log:
            log.write(f"{line}\n".encode())

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_text(self, start: int = 0) -> str:
        """Its output from byte ``start`` of the log on (the whole log by default)."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")

    def events(self, *names: str, start: int = 0) -> list[dict[str, Any]]:
        """Its JSON log lines past byte ``start`` whose ``event`` is one of ``names``."""
        return json_events(self.log_text(start).splitlines(), *names)

    def assignment(self, start: int = 0) -> set[int] | None:
        """The partitions of its latest ``assigned`` event past ``start``; None if none yet."""
        assigned = self.events("assigned", start=start)
        return set(assigned[-1]["partitions"]) if assigned else None

    async def wait_event(self, name: str, timeout: float, start: int = 0) -> dict[str, Any] | None:
        """The first ``name`` event past byte ``start``, once logged; None if the process
        ends or ``timeout`` s pass first."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(name, start=start)
            if found:
                return found[0]
            if not self.alive or time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.1)

    async def wait_consuming(self, timeout: float) -> bool:
        """Until the latest start is up (its signal handlers in place) and subscribed;
        False if it ended or took longer than ``timeout`` s."""
        found = await self.wait_event("consuming", timeout, start=self.started_at_byte)
        return found is not None and self.alive
