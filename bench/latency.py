"""S4, latency: one run of the service under a steady offered load of small files.

The input topic is created with ``message.timestamp.type=LogAppendTime``, so each
input record's timestamp (returned to the publisher by the broker) is the time the
broker appended it. The publisher sends file n to partition n % P at t0 + n / rate.
A read_committed consumer tails the output topic from before the first send; an
input's outputs are visible when the last of them (its ``count`` header; all come in
one transaction) is returned to that consumer. Latency = visible - append time, one
per input record (broker and runner share this machine's clock).

The median download time is measured from this runner: a GET of one of the same
files every 0.2 s on a kept-alive connection to the same server, during the load
(the server's delay plus transfer and both ends' event loops under that load).
Outputs are then checked by the usual gate (exactly once, nothing dead-lettered).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import resource
import statistics
import time
from collections import defaultdict
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import gate, verdicts
from bench.variant import Ctx, Variant, service_env
from bench.watch import Watcher
from bench.workload import Spec, url
from tools.kafka_io import Topics, delete_topics, unique
from tools.proc import ChildProcess, cpu_seconds, python_module

APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
PROBE_EVERY_S = 0.2
TAIL_MAX_WAIT_MS = 20  # a fetch with nothing visible waits at most this (bounds the error)


def load_spec(spec: Spec, results: list[dict], rate: float | None, seconds: float,
              share: float = 0.5) -> tuple[Spec, str]:
    """S4's spec: ``rate`` if given, else ``share`` of the service's median S1 files/s
    among ``results`` (this run's, or merged ones); the files for ``seconds`` of it."""
    if rate is None:
        s1 = [r["files_per_s"] for r in results if r.get("ok") and r.get("scenario") == "S1"
              and r["variant"] == "service" and r.get("files_per_s")]
        if not s1:
            raise SystemExit("bench: S4 needs --s4-rate, or S1 in the same run (or --merge)")
        rate, source = share * statistics.median(s1), f"{share:g} x S1 service median"
    else:
        source = "--s4-rate"
    rate = round(rate, 1)
    return dataclasses.replace(spec, rate=rate, files=math.ceil(rate * seconds)), source


async def run(ctx: Ctx, variant: Variant, round_no: int) -> dict:
    """One run of ``variant`` under S4's load; its latencies and the gate's verdict."""
    spec = ctx.spec
    topics = await _topics(ctx.bootstrap, spec.partitions, variant.name[:20])
    result: dict[str, Any] = {"variant": variant.name, "round": round_no, "files": spec.files,
                              "partitions": spec.partitions, "offered_per_s": spec.rate,
                              "loadavg_start": list(os.getloadavg())}
    log = ctx.logs / f"S4-{variant.name}-{round_no}.log"
    log.unlink(missing_ok=True)
    child = ChildProcess(python_module(variant.module), service_env(ctx, variant, topics),
                         log).start()
    try:
        await _ready(child, spec.partitions, ctx.timeout)
        result.update(await _load(ctx, topics, child))
    finally:
        await child.stop(timeout=60)
    result.update(peak_rss_mb=round(child.peak_rss_mb, 1), cpu_s=round(child.cpu_s, 2),
                  exit_code=child.returncode, log=str(log))
    async with Watcher(ctx.bootstrap, topics, {}, interval=0.1) as watcher:
        final = await watcher.offsets()
    result["gate"] = await gate.check(ctx.bootstrap, topics.output, topics.dlq, final,
                                      ctx.files.counts, spec.partitions)
    result["ok"] = result["gate"]["ok"] and result.get("complete", False)
    await delete_topics(ctx.bootstrap, topics)
    return result


async def _topics(bootstrap: str, partitions: int, name: str) -> Topics:
    topics = Topics(unique(f"{name}-in"), unique(f"{name}-out"), unique(f"{name}-dlq"),
                    unique(f"{name}-group"), partitions)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topics.input, partitions, 1, topic_configs=APPEND_TIME),
                                   NewTopic(topics.output, partitions, 1),
                                   NewTopic(topics.dlq, 1, 1)])
    finally:
        await admin.close()
    return topics


async def _ready(child: ChildProcess, partitions: int, timeout: float) -> None:
    """Until every partition's task has started (its producer initialised): the load
    is offered to a running service, not to its start-up."""
    deadline = time.monotonic() + timeout
    while len({e["partition"] for e in child.events("task_started")}) < partitions:
        if not child.alive or time.monotonic() > deadline:
            raise RuntimeError(f"S4: the service did not start its {partitions} tasks")
        await asyncio.sleep(0.1)


async def _load(ctx: Ctx, topics: Topics, child: ChildProcess) -> dict:
    """Publish at the rate, tail the outputs, probe downloads; the run's figures."""
    assert child.pid is not None
    pids = {"child": child.pid, "broker": ctx.broker_pid}
    tail = Tail(ctx.bootstrap, topics.output, topics.partitions)
    await tail.start()
    # Read while publishing: a record is stamped when getmany returns it.
    reading = asyncio.create_task(tail.until(ctx.spec.files, ctx.timeout, child))
    try:
        cpu0, t0 = _cpu(pids), time.monotonic()
        stop_probe = asyncio.Event()
        probe = asyncio.create_task(_probe_downloads(ctx.base, ctx.spec.files, stop_probe))
        try:
            appended = await publish(ctx.bootstrap, topics.input, ctx.base, ctx.spec)
        finally:
            stop_probe.set()
            downloads = await probe
        published_s = time.monotonic() - t0
        cores = {k: round((v - cpu0[k]) / published_s, 2) for k, v in _cpu(pids).items()}
        visible = await reading
    finally:
        reading.cancel()
        await tail.stop()
    return figures(appended, visible, downloads, published_s, cores)


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of the service, the broker and this runner (the file server)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return {"runner": me.ru_utime + me.ru_stime,
            **{name: cpu_seconds(pid) for name, pid in pids.items()}}


def figures(appended: dict[tuple[int, int], float], visible: dict[tuple[int, int], float],
            downloads: list[float], published_s: float, cores: dict[str, float]) -> dict:
    latencies = [1000 * (visible[k] - t) for k, t in appended.items() if k in visible]
    out: dict[str, Any] = {"complete": len(latencies) == len(appended), "cores": cores,
                           "achieved_offered_per_s": round(len(appended) / published_s, 1),
                           "visible_inputs": len(latencies)}
    if latencies:
        out.update(verdicts.latency_summary(latencies))
        out["p99_ms_by_10s"] = _by_period(appended, visible, 10.0)
        span = max(visible.values()) - min(appended.values())
        out["files_per_s"] = len(latencies) / span if span > 0 else None
    if downloads:
        out["download_median_ms"] = round(1000 * statistics.median(downloads), 1)
        out["download_probes"] = len(downloads)
    return out


def _by_period(appended: dict[tuple[int, int], float], visible: dict[tuple[int, int], float],
               seconds: float) -> list[float]:
    """p99 of the inputs appended in each period of the load: a start-up tail shows here."""
    start, periods = min(appended.values()), defaultdict(list)
    for key, t in appended.items():
        if key in visible:
            periods[int((t - start) // seconds)].append(1000 * (visible[key] - t))
    return [round(verdicts.percentile(periods[i], 99), 1) for i in sorted(periods)]


async def publish(bootstrap: str, topic: str, base: str, spec: Spec) -> dict[tuple[int, int],
                                                                             float]:
    """File n to partition n % P at t0 + n / rate; (partition, offset) -> append time (s).
    Each offset must be n // P (the gate's layout): one producer, in order, fresh topic."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        futures, t0 = [], time.monotonic()
        for n in range(spec.files):
            delay = t0 + n / spec.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            futures.append(await producer.send(topic, url(base, n).encode(), key=str(n).encode(),
                                               partition=n % spec.partitions))
        done = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    out = {}
    for n, meta in enumerate(done):
        if meta.offset != n // spec.partitions or meta.timestamp_type != 1:
            raise RuntimeError(f"S4: file {n} at offset {meta.offset}, timestamp type "
                               f"{meta.timestamp_type} (wanted {n // spec.partitions}, 1)")
        out[(meta.partition, meta.offset)] = meta.timestamp / 1000
    return out


async def _probe_downloads(base: str, files: int, stop: asyncio.Event) -> list[float]:
    seconds: list[float] = []
    async with aiohttp.ClientSession() as session:
        n = 0
        while not stop.is_set():
            started = time.monotonic()
            async with session.get(url(base, n % files)) as answer:
                await answer.read()
            seconds.append(time.monotonic() - started)
            n += 1
            await asyncio.sleep(max(0.0, PROBE_EVERY_S - seconds[-1]))
    return seconds


class Tail:
    """A read_committed consumer of the whole output topic, from its start."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                         isolation_level="read_committed",
                                         enable_auto_commit=False,
                                         fetch_max_wait_ms=TAIL_MAX_WAIT_MS)
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.outputs: dict[tuple[int, int], int] = {}
        self.visible: dict[tuple[int, int], float] = {}

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_beginning(*self.tps)
        for tp in self.tps:  # resolve the start now, not at the first fetch after a send
            await self.consumer.position(tp)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def until(self, inputs: int, timeout: float,
                    child: ChildProcess) -> dict[tuple[int, int], float]:
        """Input (partition, offset) -> when its last output was read (time.time()), until
        ``inputs`` are visible, the service ends, or ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while len(self.visible) < inputs and time.monotonic() < deadline and child.alive:
            batch = await self.consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batch.values():
                for record in records:
                    self.seen(dict(record.headers), now)
        return self.visible

    def seen(self, headers: dict[str, bytes], now: float) -> None:
        key = (int(headers["source-partition"]), int(headers["source-offset"]))
        self.outputs[key] = self.outputs.get(key, 0) + 1
        if self.outputs[key] == int(headers["count"]):
            self.visible[key] = now
