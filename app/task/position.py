"""Where a partition task starts, and the offsets it commits beyond its records'
``offset + 1``.

The consumer's position, past the input's transaction markers and aborted records
(as Kafka Streams does, KAFKA-6607), whenever every record below it has been
committed by the task: (a) with a commit, when the window holds nothing after its
last record (``offset_after``); (b) when idle and nudged by the supervisor, alone
(``catch_up``). Every record the consumer returns reaches the window in the same step
of the event loop, and the position moves only in getmany: so the position is read
first, then the window is checked with no await in between. And (c) a log that went
back under the consumer (truncated, or the topic recreated): its new offset,
committed alone, and the records taken again from it (``rewind``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition

from app.config import Settings
from app.errors import backoff
from app.ops.stats import Stats
from app.task.context import TaskContext
from app.task.fencing import stable_committed
from app.task.record_commit import RecordCommitter
from app.task.window import PrefetchWindow

log = logging.getLogger(__name__)
# How long a commit waits for the consumer's position (rule (a)) before it commits
# offset + 1 instead.
POSITION_WAIT_S = 1.0


async def start_offset(context: TaskContext, tp: TopicPartition) -> int:
    """Where a new task starts: the group's committed offset (with KIP-447 read once no
    pending transaction, an old owner's or one whose markers are still being written,
    can change it), or the log start if the group has none."""
    consumer = context.consumer
    if context.stable_offsets:
        committed = await stable_committed(context, tp)  # a departed owner fenced
    else:
        committed = await consumer.committed(tp)
    if committed is None:
        committed = (await consumer.beginning_offsets([tp]))[tp]
    return committed


class Task(Protocol):
    """What the position rules need of their partition task."""

    tp: TopicPartition
    consumer: AIOKafkaConsumer
    window: PrefetchWindow
    committed_offset: int
    settings: Settings
    stats: Stats
    context: TaskContext
    log_context: dict[str, Any]

    @property
    def running(self) -> bool: ...


class Positions:
    def __init__(self, task: Task, records: RecordCommitter) -> None:
        self.task, self.records = task, records

    async def position(self) -> int | None:
        """The consumer's position for the partition; None if it cannot tell at once (no
        longer assigned, resetting, or failed): then the position is not used."""
        try:
            # A consumer resetting its position waits up to its request timeout: a
            # commit must not wait on that.
            task = self.task
            return await asyncio.wait_for(task.consumer.position(task.tp), POSITION_WAIT_S)
        except Exception:  # the rule is an improvement only; never fail a commit over it
            return None

    async def offset_after(self, record: ConsumerRecord) -> int:
        """The offset a transaction ending with ``record`` commits: the position if the
        window holds nothing after the record (rule (a) above), else ``offset + 1``."""
        following = record.offset + 1
        if not self._nothing_after(following):
            return following  # the usual case under load: no position read
        position = await self.position()  # first: see the module's docstring
        if position is not None and position > following and self._nothing_after(following):
            return position
        return following

    def _nothing_after(self, offset: int) -> bool:
        """Running, and the window received nothing from ``offset`` on."""
        return (self.task.running and self.task.window.is_open
                and self.task.window.next_offset <= offset)

    async def catch_up(self) -> bool:
        """Woken while idle: commit the position alone if it is past the committed offset
        and nothing was received meanwhile (rule (b) above); False once closing."""
        if not self.task.running:
            return False
        position = await self.position()  # first: see the module's docstring
        committed = self.task.committed_offset
        if (position is not None and position > committed and self.task.window.pending == 0
                and self._nothing_after(committed)
                and await self.records.commit_position(position)):
            self.task.committed_offset = position
        return self.task.running

    async def rewind(self, expected: int, offset: int) -> bool:
        """The input's log went back under the consumer (app/task/window.py): what was received
        from the old log is dropped, the new position is committed alone, and records are
        taken again from it. Reprocessed, never skipped: False once closing."""
        log.warning("input partition went back from offset %d to %d (log truncated or topic "
                    "recreated): processing again from %d", expected, offset, offset,
                    extra={**self.task.log_context, "event": "input_rewound",
                           "expected": expected, "offset": offset,
                           "committed": self.task.committed_offset})
        self.task.stats.input_rewound()
        self.task.window.clear()
        attempt = 0
        while not await self.records.commit_position(offset):
            if not self.task.running:
                return False
            attempt += 1
            await self.task.context.sleep(backoff(attempt, self.task.settings.retry_backoff_s,
                                             self.task.settings.retry_backoff_max_s))
        self.task.committed_offset = offset
        if self.task.running:
            self.task.consumer.seek(self.task.tp, offset)
            self.task.window.open(offset)
        return self.task.running
