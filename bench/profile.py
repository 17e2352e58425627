"""Sampling a benchmarked process with py-spy, and what its samples say.

py-spy's raw output is one line per distinct stack, ``frame;frame;... count``. The
summary gives the functions with the most samples on top of the stack (self) and
anywhere in it (total), as shares of all samples (idle samples are left out by
py-spy unless asked).
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path


def start(pid: int, log: Path) -> tuple[subprocess.Popen, Path] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(spy):
        print("bench: py-spy not installed; no profile", file=sys.stderr)
        return None
    out = log.with_suffix(".pyspy.txt")
    proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "200", "--format",
                             "raw", "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, out


async def stop(sampler: tuple[subprocess.Popen, Path] | None) -> dict | None:
    if sampler is None:
        return None
    proc, out = sampler
    proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    for _ in range(200):
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.05)
    else:
        proc.kill()
        proc.wait()
    return summarise(out) if out.exists() else None


def summarise(path: Path, top: int = 25) -> dict:
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames}:
            anywhere[frame] += n
    def share(counts: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * n / total, 1)) for f, n in counts.most_common(top)]
    return {"samples": total, "file": str(path), "self_pct": share(own),
            "total_pct": share(anywhere)}


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``func (module.py)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.split(':')[0]).name})" if where else name
