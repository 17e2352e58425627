"""One partition's prefetch window: records being prepared ahead of their commit.

Records enter in offset order; at most ``depth`` are prepared at once; the head is
committed first. The consumer is paused for the partition while the window and
the records waiting behind it reach ``depth``, and resumed when there is room.
Each entry holds a reservation of the memory budget, released when it leaves.

aiokafka returns no record from before the position (it drops a fetch made before a
seek, and records below the offset it fetched from), and offsets only grow within a
partition. So a record below the offset after the last one received means the
partition's log went back under the consumer: an unclean leader election truncated
it, or the topic was deleted and recreated, and the consumer's position, out of range,
was reset to the log start. The window then takes nothing more and says where the log
went (``rewound``); the task decides what follows (app/task/partition.py).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition

from app.files.budget import MemoryBudget, Reservation
from app.files.records import Prepared

Prepare = Callable[[ConsumerRecord, Reservation], Coroutine[Any, Any, Prepared]]


class Entry(NamedTuple):
    record: ConsumerRecord
    reservation: Reservation
    pending: asyncio.Task[Prepared]

    def drop(self) -> None:
        """The one place an entry's memory goes back to the budget."""
        self.pending.cancel()
        self.reservation.release()


class PrefetchWindow:
    def __init__(self, tp: TopicPartition, consumer: AIOKafkaConsumer, depth: int,
                 prepare: Prepare, budget: MemoryBudget) -> None:
        self.tp, self.consumer, self.depth = tp, consumer, depth
        self._prepare, self._budget = prepare, budget
        self._inbox: collections.deque[ConsumerRecord] = collections.deque()
        self._entries: collections.deque[Entry] = collections.deque()
        self._next_offset = -1   # the offset after the last record received
        self._open = False
        self.rewound: tuple[int, int] | None = None  # (offset expected, offset received)
        self._wake = asyncio.Event()

    def open(self, offset: int) -> None:
        """Take records from ``offset`` on."""
        self._next_offset = offset
        self._open = True
        self.rewound = None
        self._resume()

    def close(self) -> None:
        """Take nothing new; cancel what is being prepared (a prepared head stays)."""
        self._open = False
        self.pause()
        self._inbox.clear()
        for entry in self._entries:
            entry.pending.cancel()
        self._wake.set()

    def wake(self) -> None:
        """Let a waiting ``head`` return None while the window is empty (to look at the
        consumer's position: app/task/partition.py)."""
        self._wake.set()

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def next_offset(self) -> int:
        """The offset after the last record received (the sought offset before any)."""
        return self._next_offset

    def clear(self) -> None:
        while self._entries:
            self._entries.popleft().drop()

    def deliver(self, records: list[ConsumerRecord]) -> None:
        if not self._open:
            return
        for record in records:
            if record.offset < self._next_offset:  # the log went back: see the docstring
                self.rewound = (self._next_offset, record.offset)
                self.close()
                return
            self._inbox.append(record)
            self._next_offset = record.offset + 1
        self._fill()

    @property
    def pending(self) -> int:
        return len(self._inbox) + len(self._entries)

    async def head(self) -> tuple[ConsumerRecord, Prepared] | None:
        """The oldest record once prepared; None when the window was closed meanwhile,
        or woken by ``wake`` while empty."""
        if not self._entries:
            if not self._open:
                return None
            await self._wake.wait()
            self._wake.clear()  # after waiting: a wake set before the wait is not lost
            if not self._entries:
                return None
        record, _, pending = self._entries[0]
        if not pending.done():  # usually it is: prepared while the one before committed
            await asyncio.wait([pending])
        return None if pending.cancelled() else (record, pending.result())

    async def ready(self, most: int) -> list[tuple[ConsumerRecord, Prepared]]:
        """The head once prepared, and the prepared records right behind it (``most`` in
        all); empty when the window was closed or woken meanwhile. Never waits for more."""
        head = await self.head()
        if head is None:
            return []
        group = [head]
        for record, _, pending in itertools.islice(self._entries, 1, most):
            if not pending.done() or pending.cancelled():
                break
            group.append((record, pending.result()))
        return group

    def pop(self, count: int = 1) -> None:
        """The first ``count`` are committed: release them and prepare the next."""
        for _ in range(count):
            self._entries.popleft().drop()
        if self._entries:
            self._entries[0].reservation.promote()
        self._fill()

    def _fill(self) -> None:
        while self._inbox and len(self._entries) < self.depth:
            record = self._inbox.popleft()
            reservation = self._budget.reservation()
            if not self._entries:
                reservation.head = True
            self._entries.append(Entry(record, reservation,
                                       asyncio.create_task(self._prepare(record, reservation))))
        if self._entries:
            self._wake.set()
        if self.pending >= self.depth:
            self.pause()
        else:
            self._resume()

    def pause(self) -> None:
        if self.tp in self.consumer.assignment():
            self.consumer.pause(self.tp)

    def _resume(self) -> None:
        if self._open and self.tp in self.consumer.assignment():
            self.consumer.resume(self.tp)
