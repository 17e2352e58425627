"""The Kafka Streams peer: the service's job as a plain Kafka Streams 4.4.0 app.

A small Java program (bench/kstreams/, built by ``make kstreams-peer`` into .cache/ with
the machine's JDK and Maven) with exactly_once_v2: each input record's file is
downloaded in the stream thread (blocking), every transaction parsed and validated with
Jackson, and one output record written per transaction with the service's key and six
headers (docs/benchmarks.md). Its ``threads`` setting is num.stream.threads.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import orjson

from bench import ROOT

JAR = ROOT / ".cache" / "kstreams-peer" / "kstreams-peer.jar"
HEAP = "-Xmx1g"  # S2's files are 2-5 MB; the producer buffers 32 MB per thread


def ensure_built() -> str | None:
    """Build the jar if it is missing or older than its sources (make decides); None
    when ready, else the error text."""
    done = subprocess.run(["make", "-s", "kstreams-peer"], cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode != 0 or not JAR.exists():
        return f"make kstreams-peer failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
    return None


def command(cfg: dict, logs: Path) -> list[str]:
    """The java command line for one run; its Kafka Streams state dir is a fresh temp
    dir beside the run's logs."""
    state = tempfile.mkdtemp(prefix="kstreams-state-", dir=logs)
    settings = {k: cfg[k] for k in ("bootstrap", "input", "output", "dlq", "group")}
    settings.update(state_dir=state, threads=cfg.get("threads", 1))
    return ["java", HEAP, "-XX:+UseG1GC", "-jar", str(JAR), orjson.dumps(settings).decode()]
