"""One input partition: its producer, its prefetch window, its commits in offset order.

Lifecycle, driven by the supervisor (app/task/supervisor.py): ``start`` takes a producer
(app/task/producers.py: warm from the pool, or initialised, which under per-partition ids
fences and settles the previous owner's transaction), reads the committed offset (with
KIP-447 only once no transaction holds it), seeks and runs; ``deliver`` takes records
from the poll loop; ``close(t)`` stops taking records, lets the commit in flight finish
(or gives up at t) and gives the producer back; ``terminate`` does the same at once. A
producer goes back clean only from a task that did not end on its own.

A task lives once. When it ends on its own (fenced, or its producer failed) the
supervisor decides whether to start a new one; the new one resumes from the
committed offset, so nothing the old one held in memory matters. How a commit is
made (transactions or not) is the committer's business (app/kafka/committer.py).

The offsets it commits beyond ``offset + 1`` of its records (past the input's
transaction markers; after the input's log went back) are app/task/position.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition

from app.dedup.store import Deduplicator
from app.errors import TaskFailed, TaskFenced
from app.kafka.protocol.zombies import partitions_held
from app.task.context import TaskContext
from app.task.fencing import fence_zombies
from app.task.position import Positions, start_offset
from app.task.producers import Lease
from app.task.record_commit import RecordCommitter
from app.task.resume_points import ResumePoints
from app.task.window import PrefetchWindow

log = logging.getLogger(__name__)
# Of a close's budget, what is kept for stopping the producer after the commit in flight.
STOP_RESERVE_S = 5.0


class TaskState(enum.Enum):
    STARTING = "starting"  # producer initialising, offset being read
    RUNNING = "running"    # taking records and committing them
    CLOSING = "closing"    # taking nothing new; the commit in flight may finish
    CLOSED = "closed"      # producer stopped


class PartitionTask:
    def __init__(self, tp: TopicPartition, context: TaskContext) -> None:
        self.tp = tp
        self.context = context
        self.settings, self.consumer, self.stats = context.settings, context.consumer, context.stats
        self.transactional_id: str | None = None  # the lease's, once taken
        self.state = TaskState.STARTING
        self.dedup = context.make_dedup(tp.partition) if context.make_dedup else None
        self.chunks = context.make_chunks(tp.partition) if context.make_chunks else None
        prepare = functools.partial(context.preparer.prepare,
                                    known=self.dedup.known if self.dedup else None)
        self.window = PrefetchWindow(tp, self.consumer, self.settings.prefetch_per_partition,
                                     prepare, context.preparer.budget)
        self.committed_offset = -1  # the offset after the last record committed
        self.started_offset = -1  # the committed offset read at start
        self._lease: Lease | None = None
        self._runner: asyncio.Task[None] | None = None
        self.log_context = self._ctx()
        self._records = RecordCommitter(self)
        self._positions = Positions(self, self._records)

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        self.window.pause()
        # Order matters: the producer first (per-partition ids: its init settles the
        # previous owner's transaction), then the offset (KIP-447: read once stable),
        # then the dedup store that the same transactions wrote.
        self._lease = await self.context.producers.take(self.tp.partition)
        self.transactional_id = self._lease.transactional_id
        self.log_context["transactional_id"] = self.transactional_id
        committed = await start_offset(self.context, self.tp)
        if self.dedup is not None:
            await self._restore(self.dedup)
        if self.chunks is not None:
            await self._read_resume_points(self.chunks.points)
        if self.state is not TaskState.STARTING:
            return
        self.consumer.seek(self.tp, committed)
        self.committed_offset = self.started_offset = committed
        self.state = TaskState.RUNNING
        self.window.open(committed)
        self._runner = asyncio.create_task(self._run(), name=f"partition-{self.tp.partition}")
        log.info("partition task started",
                 extra=self._ctx(event="task_started", offset=committed))

    async def _restore(self, dedup: Deduplicator) -> None:
        """The dedup store as committed, read after the committed offset settled."""
        entries, seconds = await self._read_changelog(dedup, "dedup changelog")
        self.stats.restored(self.tp.partition, entries, seconds)
        log.info("dedup store restored: %d entries in %.2fs", entries, seconds,
                 extra=self._ctx(event="restored", entries=entries))

    async def _read_resume_points(self, points: ResumePoints) -> None:
        """The chunked files' resume points, read as the dedup store is."""
        entries, seconds = await self._read_changelog(points, "progress topic")
        log.info("resume points read: %d in %.2fs", entries, seconds,
                 extra=self._ctx(event="resume_points_read", entries=entries))

    async def _read_changelog(self, reader: Deduplicator | ResumePoints,
                              what: str) -> tuple[int, float]:
        """Entries read into ``reader``, and the seconds it took; a transaction still
        open on its partition is fenced (``what`` it held, in the log), not waited out."""
        started, consumer = time.monotonic(), self.context.make_restore_consumer()  # type: ignore[misc]
        try:  # a start that fails or is cancelled (revoked meanwhile) is stopped too
            await consumer.start()
            entries = await reader.restore(consumer, functools.partial(
                fence_zombies, self.settings, self.stats, [self.tp],
                partitions_held([reader.changelog]), what))
        finally:
            await consumer.stop()
        return entries, time.monotonic() - started

    @property
    def ready(self) -> bool:
        return self.state is TaskState.RUNNING

    running = ready  # what the record committer asks (app/task/record_commit.py)

    async def offset_after(self, record: ConsumerRecord) -> int:
        return await self._positions.offset_after(record)

    @property
    def producer(self) -> AIOKafkaProducer | None:
        return self._lease.producer if self._lease is not None else None

    @property
    def progressed(self) -> bool:
        """Committed something in its life."""
        return self.committed_offset > self.started_offset >= 0

    @property
    def open_since(self) -> float | None:
        """When the commit in progress began (time.monotonic()); None if none is."""
        return self._records.open_since

    async def wait(self) -> None:
        """Until the task ends; raises TaskFenced or TaskFailed if it ended on its own."""
        if self._runner is not None:
            await self._runner

    async def close(self, timeout: float) -> None:
        """Within ``timeout`` in all, so that a revoke stays under the rebalance timeout:
        the commit in flight may finish, and the producer stops in what is left."""
        deadline = time.monotonic() + timeout
        self._stop_taking()
        if self._runner is not None and not self._runner.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._runner),
                                       timeout - min(STOP_RESERVE_S, timeout / 4))
            except (TimeoutError, TaskFenced, TaskFailed):
                pass
            except Exception:
                log.exception("partition task failed while closing", extra=self._ctx())
        await self.terminate(max(0.0, deadline - time.monotonic()))

    async def terminate(self, stop_within: float | None = None) -> None:
        self._stop_taking()
        ended_on_its_own = self._runner is not None and self._runner.done() and (
            self._runner.cancelled() or self._runner.exception() is not None)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(BaseException):
                await self._runner
        self.window.clear()
        lease, self._lease = self._lease, None
        if lease is not None:
            # A transaction left open here is settled by an init on its id (the pool
            # does it at once; else the next owner's) or the transaction timeout.
            await self.context.producers.give_back(
                lease, clean=not ended_on_its_own,
                within=stop_within if stop_within is not None
                else self.settings.shutdown_timeout_s)
        self.state = TaskState.CLOSED

    def _stop_taking(self) -> None:
        if self.state is not TaskState.CLOSED:
            self.state = TaskState.CLOSING
        self.window.close()

    def deliver(self, records: list[ConsumerRecord]) -> None:
        if self.state is TaskState.RUNNING:
            self.window.deliver(records)

    @property
    def pending(self) -> int:
        return self.window.pending

    def nudge(self) -> None:
        """The committed offset is short of the last stable offset: if the task is idle,
        let it look at the consumer's position (rule (b) above)."""
        if self.state is TaskState.RUNNING and self.window.pending == 0:
            self.window.wake()

    # -- commits, strictly in offset order ----------------------------------------

    async def _run(self) -> None:
        try:
            while self.state is TaskState.RUNNING and await self._commit_ready():
                pass
        finally:
            if self.state is TaskState.RUNNING:  # ended on its own: fenced or failed
                self.state = TaskState.CLOSING

    async def _commit_ready(self) -> bool:
        """Commit what is ready at the head of the window; False once closing. Its records
        are referenced only in here: once committed and released they are freed, not
        kept alive while the task waits for the next record."""
        group = await self.window.ready(self.settings.transaction_max_records)
        if self.window.rewound is not None:  # received before the log went back: drop it
            return await self._positions.rewind(*self.window.rewound)
        if not group:  # closed, or woken while idle
            return await self._positions.catch_up()
        done = await self._records.commit_group(group)
        if done:
            self.committed_offset = self._records.committed_offset
            self.window.pop(done)
        return done > 0

    def _ctx(self, **extra: Any) -> dict[str, Any]:
        return {"partition": self.tp.partition, "transactional_id": self.transactional_id,
                **extra}
