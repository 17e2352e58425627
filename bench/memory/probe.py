"""What the memory benchmark watches while the service runs: its memory (from /proc),
its event loop lag (from /metrics) and its group's lag (from the broker)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from tools.kafka_io import Topics

LOOP_LAG_METRIC = "txingest_event_loop_lag_seconds"
# Gauges of the worst lag, under the names a service may give them; exact where found.
RESERVED_PEAK_METRIC = "txingest_memory_reserved_peak_bytes"
LOOP_LAG_GAUGES = (LOOP_LAG_METRIC, LOOP_LAG_METRIC + "_max", "txingest_event_loop_lag_max_seconds")


def proc_status_kb(pid: int) -> dict[str, int]:
    """The kB figures of /proc/<pid>/status (VmRSS, VmHWM, ...); empty once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if rest.strip().endswith(" kB"):
            found[name] = int(rest.split()[0])
    return found


@dataclass
class MemorySampler:
    """VmRSS every ``interval`` seconds (the curve and its max) and the last VmHWM seen."""

    pid: int
    interval: float = 0.2
    started: float = field(default_factory=time.monotonic)  # the curve's time 0
    curve: list[tuple[float, int]] = field(default_factory=list)  # (s since start, kB)
    max_rss_kb: int = 0
    hwm_kb: int = 0

    def sample(self) -> None:
        status = proc_status_kb(self.pid)
        if "VmRSS" in status:
            self.max_rss_kb = max(self.max_rss_kb, status["VmRSS"])
            self.hwm_kb = max(self.hwm_kb, status.get("VmHWM", 0))
            self.curve.append((self.at(time.monotonic()), status["VmRSS"]))

    def at(self, moment: float) -> float:
        """A time.monotonic() moment on the curve's time axis."""
        return round(moment - self.started, 2)

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)


def loop_lag(exposition: str) -> tuple[float, bool] | None:
    """The largest event loop lag in a Prometheus text exposition, and whether it is exact.

    A gauge (one of ``LOOP_LAG_GAUGES``) is exact. From a histogram only a bound is known:
    the smallest bucket that holds every observation (False). None if not exposed.
    """
    values: list[float] = []
    buckets: list[tuple[float, float]] = []
    count = None
    for line in exposition.splitlines():
        if not line.startswith("txingest_event_loop_lag"):  # comments start with #
            continue
        head, _, value_text = line.rpartition(" ")
        name, _, labels = head.partition("{")
        value = float(value_text)
        if name in LOOP_LAG_GAUGES:
            values.append(value)
        elif name == LOOP_LAG_METRIC + "_bucket":
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), value))
        elif name == LOOP_LAG_METRIC + "_count":
            count = value
    if values:
        return max(values), True
    if buckets and count:
        return min(le for le, cumulative in buckets if cumulative >= count), False
    if buckets:
        return 0.0, False
    return None


def gauge(exposition: str, name: str) -> float | None:
    """The largest value of an unlabelled or labelled gauge ``name``; None if not exposed."""
    values = [float(line.rpartition(" ")[2]) for line in exposition.splitlines()
              if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{")]
    return max(values) if values else None


@dataclass
class MetricsScraper:
    """Scrapes /metrics every ``interval`` seconds; keeps the largest loop lag seen and
    the service's own peak of memory counted against its budget, where it exposes one."""

    port: int
    interval: float = 1.0
    worst: float | None = None
    exact: bool = True
    reserved_peak: float | None = None
    scrapes: int = 0

    async def run(self) -> None:
        url = f"http://127.0.0.1:{self.port}/metrics"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(url) as resp:
                        self.note(await resp.text())
                await asyncio.sleep(self.interval)

    def note(self, exposition: str) -> None:
        self.scrapes += 1
        found = loop_lag(exposition)
        if found is not None and (self.worst is None or found[0] > self.worst):
            self.worst, self.exact = found
        reserved = gauge(exposition, RESERVED_PEAK_METRIC)
        if reserved is not None:
            self.reserved_peak = max(reserved, self.reserved_peak or 0.0)

    def shown(self) -> str:
        if self.worst is None or math.isnan(self.worst):
            return "n/a"
        return f"{self.worst:.3f}" if self.exact else f"<={self.worst:g}"


class GroupLag:
    """Input records not yet covered by the group's committed offsets, as
    tools/kafka_io.py ``lag`` counts them, with clients kept open between polls."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.topics = topics
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)

    async def __aenter__(self) -> GroupLag:
        await self.admin.start()
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def now(self) -> int | None:
        """The lag, or None if the broker could not say this time."""
        tps = [TopicPartition(self.topics.input, p) for p in range(self.topics.partitions)]
        try:
            committed = await self.admin.list_consumer_group_offsets(self.topics.group)
            end = await self.consumer.end_offsets(tps)
        except KafkaError as exc:  # a coordinator still loading, a leader moving
            if not exc.retriable:
                raise
            return None
        return sum(end[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)
