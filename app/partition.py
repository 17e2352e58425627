"""One input partition: its producer, its prefetch window, its commits in offset order.

Lifecycle, driven by the supervisor (app/supervisor.py): ``start`` inits the producer
(this fences and settles any previous owner's transaction), reads the committed offset,
seeks and runs; ``deliver`` takes records from the poll loop; ``close(t)`` stops taking
records, lets the commit in flight finish (or gives up at t) and stops the producer;
``terminate`` does the same at once.

A task lives once. When it ends on its own (fenced, or its producer failed) the
supervisor decides whether to start a new one; the new one resumes from the
committed offset, so nothing the old one held in memory matters. How a commit is
made (transactions or not) is the committer's business (app/commit.py).

The committed offset and transaction markers: after a transaction on the input topic
(``txingest redrive``, any transactional upstream) the consumer's position is past the
transaction's commit marker, and past an aborted transaction's records, which it never
returns. Committing ``offset + 1`` of the last record would leave the committed offset
short of the partition's end for good (lag 1 on an idle partition). So, as Kafka
Streams does (KAFKA-6607), the task commits the consumer's position instead when every
record below it has been committed by this task:

(a) with a commit: when the window holds nothing after its last record, the
    transaction commits the position if it is further (``_offset_after``);
(b) when idle: the supervisor wakes an idle task whose committed offset is short of
    the last stable offset (``nudge``); if the window is empty and the position is
    past the committed offset, the task commits that offset alone, in a transaction
    with no outputs through the same committer (``_catch_up``).

Every record the consumer returns reaches the window in the same step of the event
loop (the poll loop delivers right after getmany, while the task is RUNNING and its
window open), and the position moves only in getmany. So the position is read first,
then the window is checked without an await in between: if it holds nothing after the
last record committed, whatever lies between that record and the position was never
returned: markers, or an aborted transaction's records.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition

from app.commit import Committer
from app.config import Settings
from app.dedup import Deduplicator
from app.errors import TaskFailed, TaskFenced
from app.kafka.protocol.stable_offsets import fetch_stable_offsets
from app.prepare import Preparer
from app.record_commit import RecordCommitter
from app.stats import Stats
from app.window import PrefetchWindow

log = logging.getLogger(__name__)
# How long a commit waits for the consumer's position (rule (a)) before it commits
# offset + 1 instead.
POSITION_WAIT_S = 1.0


class TaskState(enum.Enum):
    STARTING = "starting"  # producer initialising, offset being read
    RUNNING = "running"    # taking records and committing them
    CLOSING = "closing"    # taking nothing new; the commit in flight may finish
    CLOSED = "closed"      # producer stopped


@dataclass(frozen=True)
class TaskContext:
    """What every partition task of the service shares."""

    settings: Settings
    consumer: AIOKafkaConsumer
    preparer: Preparer
    stats: Stats
    committer: Committer
    make_producer: Callable[[int], AIOKafkaProducer]
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    # Attempts of a record whose transaction timed out, kept across its partition's tasks.
    timeouts: collections.Counter[tuple[TopicPartition, int]] = field(
        default_factory=collections.Counter)
    # After a failed group, each partition's records up to this offset commit one by one.
    singles_until: dict[TopicPartition, int] = field(default_factory=dict)
    make_dedup: Callable[[int], Deduplicator] | None = None  # with DEDUP on
    make_restore_consumer: Callable[[], AIOKafkaConsumer] | None = None
    # KIP-447: the committed offset is read with require_stable (no pending transaction).
    stable_offsets: bool = False


class PartitionTask:
    def __init__(self, tp: TopicPartition, context: TaskContext) -> None:
        self.tp = tp
        self.context = context
        self.settings, self.consumer, self.stats = context.settings, context.consumer, context.stats
        self.transactional_id = self.settings.transactional_id(tp.partition)
        self.state = TaskState.STARTING
        self.dedup = context.make_dedup(tp.partition) if context.make_dedup else None
        prepare = functools.partial(context.preparer.prepare,
                                    known=self.dedup.known if self.dedup else None)
        self.window = PrefetchWindow(tp, self.consumer, self.settings.prefetch_per_partition,
                                     prepare, context.preparer.budget)
        self.committed_offset = -1  # the offset after the last record committed
        self._producer: AIOKafkaProducer | None = None
        self._runner: asyncio.Task[None] | None = None
        self._records = RecordCommitter(tp, context, self.dedup, lambda: self._producer,
                                        lambda: self.state is TaskState.RUNNING, self._ctx(),
                                        self._offset_after)

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        self.window.pause()
        self._producer = self.context.make_producer(self.tp.partition)
        # Order matters: init_transactions first, so the previous owner's
        # transaction is committed or aborted before we read the offset it wrote.
        await self._producer.start()
        if self.dedup is not None:
            await self._restore(self.dedup)
        committed = await self._committed()
        if committed is None:
            committed = (await self.consumer.beginning_offsets([self.tp]))[self.tp]
        if self.state is not TaskState.STARTING:
            return
        self.consumer.seek(self.tp, committed)
        self.committed_offset = committed
        self.state = TaskState.RUNNING
        self.window.open(committed)
        self._runner = asyncio.create_task(self._run(), name=f"partition-{self.tp.partition}")
        log.info("partition task started",
                 extra=self._ctx(event="task_started", offset=committed))

    async def _committed(self) -> int | None:
        """The group's committed offset; with KIP-447, once no pending transaction (an
        old owner's, or on 3.x one whose markers are still being written) can change it."""
        if not self.context.stable_offsets:
            return await self.consumer.committed(self.tp)
        offsets = await fetch_stable_offsets(
            self.consumer._client, self.settings.group_id, [self.tp],
            timeout_s=self.settings.transaction_timeout_ms / 1000)
        return offsets[self.tp]

    async def _restore(self, dedup: Deduplicator) -> None:
        """The dedup store as committed: after init_transactions settled any open one."""
        started, consumer = time.monotonic(), self.context.make_restore_consumer()  # type: ignore[misc]
        try:  # a start that fails or is cancelled (revoked meanwhile) is stopped too
            await consumer.start()
            entries = await dedup.restore(consumer)
        finally:
            await consumer.stop()
        seconds = time.monotonic() - started
        self.stats.restored(self.tp.partition, entries, seconds)
        log.info("dedup store restored: %d entries in %.2fs", entries, seconds,
                 extra=self._ctx(event="restored", entries=entries))

    @property
    def ready(self) -> bool:
        return self.state is TaskState.RUNNING

    async def wait(self) -> None:
        """Until the task ends; raises TaskFenced or TaskFailed if it ended on its own."""
        if self._runner is not None:
            await self._runner

    async def close(self, timeout: float) -> None:
        self._stop_taking()
        if self._runner is not None and not self._runner.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._runner), timeout)
            except (TimeoutError, TaskFenced, TaskFailed):
                pass
            except Exception:
                log.exception("partition task failed while closing", extra=self._ctx())
        await self.terminate()

    async def terminate(self) -> None:
        self._stop_taking()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(BaseException):
                await self._runner
        self.window.clear()
        if self._producer is not None:
            # A transaction left open here is settled by the next owner's
            # init_transactions (or the transaction timeout); stop without waiting on it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), self.settings.shutdown_timeout_s)
            self._producer = None
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
        if not group:  # closed, or woken while idle
            return await self._catch_up()
        done = await self._records.commit_group(group)
        if done:
            self.committed_offset = self._records.committed_offset
            self.window.pop(done)
        return done > 0

    async def _position(self) -> int | None:
        """The consumer's position for the partition; None if it cannot tell at once (no
        longer assigned, resetting, or failed): then the position is not used."""
        try:
            # A consumer resetting its position waits up to its request timeout: a
            # commit must not wait on that.
            return await asyncio.wait_for(self.consumer.position(self.tp), POSITION_WAIT_S)
        except Exception:  # the rule is an improvement only; never fail a commit over it
            return None

    async def _offset_after(self, record: ConsumerRecord) -> int:
        """The offset a transaction ending with ``record`` commits: the position if the
        window holds nothing after the record (rule (a) above), else ``offset + 1``."""
        following = record.offset + 1
        if not self._nothing_after(following):
            return following  # the usual case under load: no position read
        position = await self._position()  # first: see the module's docstring
        if position is not None and position > following and self._nothing_after(following):
            return position
        return following

    def _nothing_after(self, offset: int) -> bool:
        """Running, and the window received nothing from ``offset`` on."""
        return (self.state is TaskState.RUNNING and self.window.is_open
                and self.window.next_offset <= offset)

    async def _catch_up(self) -> bool:
        """Woken while idle: commit the position alone if it is past the committed offset
        and nothing was received meanwhile (rule (b) above); False once closing."""
        if self.state is not TaskState.RUNNING:
            return False
        position = await self._position()  # first: see the module's docstring
        if (position is not None and position > self.committed_offset
                and self.window.pending == 0 and self._nothing_after(self.committed_offset)
                and await self._records.commit_position(position)):
            self.committed_offset = position
        return self.state is TaskState.RUNNING

    def _ctx(self, **extra: Any) -> dict[str, Any]:
        return {"partition": self.tp.partition, "transactional_id": self.transactional_id,
                **extra}
