"""One run of one variant: fresh topics, the process, its progress, its costs, the gate."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from bench import gate, kstreams_peer, peer, profile
from bench.watch import Progress, Watcher, rates
from bench.workload import Files, Spec, file_number, fresh_topics
from tools.kafka_io import Topics, delete_topics
from tools.proc import ChildProcess, json_events, python_module


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # "service", "baseline" (bench/baselines.py), "peer" or "kstreams"
    env: dict[str, str] = field(default_factory=dict)  # service settings
    cfg: dict = field(default_factory=dict)  # baseline settings
    limit: int | None = None  # records to process (a prefix of the same data)
    module: str = "app"  # a service variant's entry point (bench.probe: instrumented)
    profile: bool = False  # sample the process with py-spy while it runs

    @property
    def commits_offsets(self) -> bool:
        return self.cfg.get("variant") != "r1"


@dataclass
class Ctx:
    bootstrap: str
    broker_pid: int
    base: str
    spec: Spec
    files: Files
    logs: Path
    timeout: float


async def run(ctx: Ctx, variant: Variant, round_no: int) -> dict:
    """Run the variant once; returns its measurements and whether it passed the gate."""
    topics = await fresh_topics(ctx.bootstrap, ctx.spec, ctx.base, variant.name[:20])
    target = min(variant.limit or ctx.spec.files, ctx.spec.files)
    result: dict[str, Any] = {"variant": variant.name, "round": round_no, "files": target,
              "partitions": ctx.spec.partitions, "loadavg_start": list(os.getloadavg())}
    log = ctx.logs / f"{ctx.spec.partitions}p-{variant.name}-{round_no}.log"
    started = time.time()
    log.unlink(missing_ok=True)  # this run's output only
    child = ChildProcess(_command(ctx, variant, topics, target), service_env(ctx, variant, topics),
                         log).start()
    assert child.pid is not None
    sampler = profile.start(child.pid, log) if variant.profile else None
    try:
        progress, final = await _follow(ctx, variant, topics, child, target)
    finally:
        if sampler is not None:
            result["profile"] = await profile.stop(sampler)
        await child.stop(timeout=60)  # killed after that: its exit code says so
    result.update(peak_rss_mb=round(child.peak_rss_mb, 1), cpu_s=round(child.cpu_s, 2),
                  exit_code=child.returncode, log=str(log))
    result.update(_measure(ctx, variant, progress, target, log, started))
    result["gate"] = await gate.check(ctx.bootstrap, topics.output, topics.dlq, final,
                                      ctx.files.counts, ctx.spec.partitions)
    result["ok"] = result["gate"]["ok"] and result.get("complete", False)
    await delete_topics(ctx.bootstrap, topics)
    return result


async def _follow(ctx: Ctx, variant: Variant, topics: Topics, child: ChildProcess,
                  target: int) -> tuple[Progress | None, list[int]]:
    """Watch the group's commits (or wait for R1 to finish); the offsets to check."""
    assert child.pid is not None
    pids = {"broker": ctx.broker_pid, "child": child.pid}
    async with Watcher(ctx.bootstrap, topics, pids, interval=0.1) as watcher:
        if not variant.commits_offsets:
            await child.wait(ctx.timeout)
            return None, [len(range(p, target, ctx.spec.partitions))
                          for p in range(ctx.spec.partitions)]
        progress = await watcher.until(target, lambda: child.poll() is None, ctx.timeout)
        if child.poll() is None and variant.kind == "baseline":
            await child.wait(30)  # it exits on its own once done
        return progress, await watcher.offsets()


def _measure(ctx: Ctx, variant: Variant, progress: Progress | None, target: int, log: Path,
             started: float) -> dict:
    found = _log_facts(log)
    out = {k: v for k, v in found.items() if k not in ("assigned_at",)}
    if progress is None:  # R1 times itself
        return {**out, **found.get("result", {}), "complete": "result" in found}
    counts = ctx.files.counts

    def outputs(offsets: list[int]) -> int:
        return sum(counts[file_number(p, o, ctx.spec.partitions)]
                   for p, upto in enumerate(offsets) for o in range(upto))

    out.update(rates(progress, target, outputs))
    done = progress.done(target)
    if done is not None:  # start-up, pipeline fill and tail included
        out["end_to_end_files_per_s"] = target / (done.wall - started)
        out["end_to_end_msgs_per_s"] = outputs(done.offsets) / (done.wall - started)
    out["timeline"] = _timeline(progress, started)
    first, every = progress.first_commit(), progress.every_partition_committed()
    assigned = found.get("assigned_at")  # the service's log; other variants have none
    if first is not None:
        out["first_commit_from_start_s"] = round(first.wall - started, 3)
        if assigned is not None:
            out["first_commit_s"] = round(first.wall - assigned, 3)
    if every is not None and assigned is not None:
        out["every_partition_committed_s"] = round(every.wall - assigned, 3)
    return out


def _timeline(progress: Progress, started: float) -> list[tuple[float, int]]:
    """(seconds since start, records committed), about every half second: to spot stalls."""
    points, last = [], -1.0
    for s in progress.samples:
        if s.wall - last >= 0.5 or s is progress.samples[-1]:
            points.append((round(s.wall - started, 1), s.total))
            last = s.wall
    return points


def _log_facts(log: Path) -> dict:
    """From the child's output: the service's first assignment time and its summary (the
    ``assigned`` and ``stopped`` events), a baseline's result."""
    facts: dict = {}
    lines = log.read_text(errors="replace").splitlines()
    for line in lines:
        if line.startswith("PROBE "):
            facts["probe"] = orjson.loads(line[6:])
        elif line.startswith("RESULT "):
            facts["result"] = orjson.loads(line[7:])
            facts["retries"] = facts["result"].pop("retries", {})
    events = json_events(lines, "assigned", "stopped")
    assigned = [e for e in events if e["event"] == "assigned"]
    stopped = [e for e in events if e["event"] == "stopped"]
    if assigned:
        facts["assigned_at"] = _epoch(assigned[0]["ts"])
    if stopped:
        facts["service_summary"] = {k: v for k, v in stopped[-1].items()
                                    if k not in ("ts", "level", "logger", "msg", "event")}
    return facts


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _command(ctx: Ctx, variant: Variant, topics: Topics, target: int) -> list[str]:
    if variant.kind == "service":
        return python_module(variant.module)
    cfg = {"bootstrap": ctx.bootstrap, "input": topics.input, "output": topics.output,
           "group": topics.group, "base": ctx.base, "limit": target,
           "spec": ctx.spec.__dict__, "retry_backoff_ms": 20, **variant.cfg}
    if variant.kind == "peer":
        cfg["state_dir"] = tempfile.mkdtemp(prefix="bench-peer-state-")
        return [str(peer.python()), "-m", "bench.peer", orjson.dumps(cfg).decode()]
    if variant.kind == "kstreams":
        return kstreams_peer.command({**cfg, "dlq": topics.dlq}, ctx.logs)
    return [*python_module("bench.baselines"), orjson.dumps(cfg).decode()]


def service_env(ctx: Ctx, variant: Variant, topics: Topics) -> dict[str, str]:
    if variant.kind != "service":
        return {}
    return {"KAFKA_BOOTSTRAP_SERVERS": ctx.bootstrap, "INPUT_TOPIC": topics.input,
            "OUTPUT_TOPIC": topics.output, "DLQ_TOPIC": topics.dlq, "GROUP_ID": topics.group,
            "POD_NAME": f"bench-{variant.name}-{uuid.uuid4().hex[:8]}", "HTTP_PORT": "0",
            "DOWNLOAD_ALLOW_PRIVATE_NETWORKS": "true", "LOG_FORMAT": "json", **variant.env}
