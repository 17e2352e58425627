"""Progress of a consumer group, seen from outside: its committed offsets, polled.

Every variant that commits input offsets (service, upper bound, naive, R2, peer) is
timed the same way: the records committed between the polls that first see 10% and
90% of them, over the time between those polls. Start-up is left out (it is reported
on its own as time to first commit).
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from tools.kafka_io import Topics
from tools.proc import cpu_seconds

STEADY = (0.1, 0.9)  # the part of a run that is timed


@dataclass
class Sample:
    wall: float  # time.time(), to line up with the service's log timestamps
    t: float     # time.monotonic()
    offsets: list[int]
    cpu: dict[str, float]  # CPU seconds so far of the processes watched, and this one

    @property
    def total(self) -> int:
        return sum(self.offsets)


@dataclass
class Progress:
    samples: list[Sample] = field(default_factory=list)

    def first_commit(self) -> Sample | None:
        return next((s for s in self.samples if s.total > 0), None)

    def done(self, target: int) -> Sample | None:
        return next((s for s in self.samples if s.total >= target), None)

    def every_partition_committed(self) -> Sample | None:
        return next((s for s in self.samples if all(s.offsets)), None)


class Watcher:
    def __init__(self, bootstrap: str, topics: Topics, pids: dict[str, int],
                 interval: float) -> None:
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self.topics = topics
        self.pids = pids
        self.interval = interval

    async def __aenter__(self) -> Watcher:
        await self.admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.admin.close()

    async def offsets(self) -> list[int]:
        try:
            committed = await self.admin.list_consumer_group_offsets(self.topics.group)
        except KafkaError:
            committed = {}  # the group does not exist yet, or its coordinator is loading
        return [committed[tp].offset if tp in committed else 0
                for tp in (TopicPartition(self.topics.input, p)
                           for p in range(self.topics.partitions))]

    def cpu(self) -> dict[str, float]:
        me = resource.getrusage(resource.RUSAGE_SELF)
        return {"runner": me.ru_utime + me.ru_stime,
                **{name: cpu_seconds(pid) for name, pid in self.pids.items()}}

    async def until(self, target: int, alive: Callable[[], bool], timeout: float) -> Progress:
        """Poll until ``target`` records are committed, the process dies, or the timeout."""
        progress = Progress()
        deadline = time.monotonic() + timeout
        while True:
            offsets = await self.offsets()
            progress.samples.append(Sample(time.time(), time.monotonic(), offsets, self.cpu()))
            if sum(offsets) >= target or not alive() or time.monotonic() > deadline:
                return progress
            await asyncio.sleep(self.interval)


def rates(progress: Progress, target: int, counts: Callable[[list[int]], int]) -> dict:
    """Records and output messages per second in the steady state: from the first poll
    that sees 10% of the records committed to the first that sees 90%.

    The window leaves out start-up and the work a variant prepares before its first
    commit (a deep prefetch of large files front-loads much of it), and the tail.
    ``counts(offsets)`` is the number of output messages of the records below those
    committed offsets.
    """
    done = progress.done(target)
    low = next((s for s in progress.samples if s.total >= STEADY[0] * target), None)
    high = next((s for s in progress.samples if s.total >= STEADY[1] * target), None)
    if done is None or low is None or high is None or high.t <= low.t:
        return {"complete": done is not None}
    seconds = high.t - low.t
    return {
        "complete": True,
        "window_s": round(seconds, 3),
        "files_per_s": (high.total - low.total) / seconds,
        "msgs_per_s": (counts(high.offsets) - counts(low.offsets)) / seconds,
        # Cores each process kept busy in the window (2 = this whole machine).
        "cores": {name: round((high.cpu[name] - low.cpu[name]) / seconds, 2)
                  for name in high.cpu if high.cpu[name] >= low.cpu[name] > 0},
    }
