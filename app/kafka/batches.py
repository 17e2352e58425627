"""A transaction's records sent as whole record batches, every send's result checked.

aiokafka's batch API: one future and one partitioner call per batch, not per record;
each record goes to the partition aiokafka's default partitioner would pick for its
key. At most SEND_WINDOW_BYTES of a transaction's batches wait in the client at once.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from app.files.records import (
    FileOutputs,
    Headers,
    Output,
    StreamedOutputs,
    index_headers,
    index_range,
)

_PARTITIONER = DefaultPartitioner()
SEND_WINDOW_BYTES = 8 * 1024 * 1024
# A spooled file sends millions of batches: results checked meanwhile are let go.
_SENT_KEPT = 4096


async def send_all(producer: AIOKafkaProducer, records: Sequence[Output],
                   meanwhile: Callable[[], Awaitable[None]] | None = None) -> None:
    """Every record, in order, packed into as few record batches as fit; every result checked.

    One future and one partitioner call per batch instead of per record. The
    partition is the one aiokafka's default partitioner would pick for the key.
    ``meanwhile`` runs once every batch is handed over, before any result is awaited.
    """
    sent: list[asyncio.Future] = []
    try:
        await send_batches(producer, records, sent)
        if meanwhile is not None:
            await meanwhile()
        # aiokafka would commit even if a send failed: every result must be checked.
        for future in sent:
            if not future.done():
                await asyncio.wait([future])
            failure = future.exception()
            if failure is not None:
                raise failure
    except BaseException:
        for future in sent:  # their outcome no longer matters; the abort covers them
            future.add_done_callback(_ignore_outcome)
        raise


async def send_batches(producer: AIOKafkaProducer, records: Sequence[Output],
                        sent: list[asyncio.Future]) -> None:
    batches = _Batches(producer, sent)
    for r in records:
        if isinstance(r, FileOutputs):
            await batches.add_file(r)
            continue
        if isinstance(r, StreamedOutputs):
            await batches.add_streamed(r)
            continue
        where = r.partition if r.partition is not None else await batches.partition(r.topic, r.key)
        await batches.add(r.topic, where, r.key, r.value, r.headers)
    await batches.send_open()


class _Batches:
    """A transaction's open record batches, one per output partition: full ones go to
    aiokafka (through the send window) and a new one takes their place."""

    def __init__(self, producer: AIOKafkaProducer, sent: list[asyncio.Future]) -> None:
        self.producer, self.sent, self.window = producer, sent, _SendWindow()
        self.open: dict[tuple[str, int], Any] = {}
        self.chosen: dict[tuple[str, bytes | None], int] = {}

    async def partition(self, topic: str, key: bytes | None) -> int:
        where = self.chosen.get((topic, key))
        if where is None:
            where = self.chosen[topic, key] = await _partition_for(self.producer, topic, key)
        return where

    async def add(self, topic: str, where: int, key: bytes | None, value: bytes | None,
                  headers: Headers) -> None:
        batch = self.open.get((topic, where))
        if batch is None or batch.append(key=key, value=value, timestamp=None,
                                         headers=headers) is None:
            batch = await self._next(topic, where, batch)
            batch.append(key=key, value=value, timestamp=None, headers=headers)

    async def add_file(self, out: FileOutputs) -> None:
        """The hot path of big files: one partition lookup, and one headers list reused
        for every record (a record batch copies the headers as it appends)."""
        headers: Headers = [*out.shared, out.count, out.count]
        await self._add_values(out.topic, out.key, out.values,
                               index_headers(len(out.values)), headers)

    async def add_streamed(self, out: StreamedOutputs) -> None:
        """A spooled file, one parsed slice at a time: memory holds one slice, and the
        send window's batches, whatever the file's size."""
        headers: Headers = [*out.shared, out.count, out.count]
        done, topic = out.start, out.topic
        async for keys, values in out.slices():
            indexes = index_range(done, done + len(values))
            done += len(values)
            if isinstance(keys, bytes):
                await self._add_values(topic, keys, values, indexes, headers)
                continue
            partitions = sorted(await self.producer.partitions_for(topic))
            for index, key, value in zip(indexes, keys, values, strict=True):
                headers[-2] = index
                await self.add(topic, _PARTITIONER(key, partitions, partitions), key, value,
                               headers)

    async def _add_values(self, topic: str, key: bytes, values: list[bytes],
                          indexes: list[tuple[str, bytes]], headers: Headers) -> None:
        """Records of one key; ``headers[-2]`` takes each one's index."""
        where = await self.partition(topic, key)
        batch = self.open.get((topic, where))
        if batch is None:
            batch = await self._next(topic, where, None)
        at = len(headers) - 2
        for index, value in zip(indexes, values, strict=True):
            headers[at] = index
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                batch = await self._next(topic, where, batch)
                batch.append(key=key, value=value, timestamp=None, headers=headers)

    async def _next(self, topic: str, where: int, full: Any) -> Any:
        if full is not None:
            self.sent.append(await self.window.send(self.producer, full, topic, where))
            if len(self.sent) > 2 * _SENT_KEPT:
                self._let_go_checked()
        batch = self.open[topic, where] = self.producer.create_batch()
        return batch

    def _let_go_checked(self) -> None:
        """Forget sends that succeeded (a failed one stays, for send_all to raise)."""
        self.sent[:] = [f for f in self.sent if not f.done() or f.cancelled()
                        or f.exception() is not None]

    async def send_open(self) -> None:
        for (topic, where), batch in self.open.items():
            self.sent.append(await self.window.send(self.producer, batch, topic, where))


class _SendWindow:
    """At most SEND_WINDOW_BYTES of a transaction's batches wait in aiokafka at once.

    aiokafka has no bound on what its accumulator holds: a big file's serialized
    batches, all queued at once, are a second copy of the file beside its records."""

    def __init__(self) -> None:
        self._waiting: collections.deque[tuple[asyncio.Future, int]] = collections.deque()
        self._bytes = 0

    async def send(self, producer: AIOKafkaProducer, batch: Any, topic: str,
                   partition: int) -> asyncio.Future:
        size = batch.size()
        batch.close()  # complete: aiokafka sends a closed batch at once, without linger_ms
        future = await producer.send_batch(batch, topic, partition=partition)
        self._waiting.append((future, size))
        self._bytes += size
        while self._bytes > SEND_WINDOW_BYTES:
            oldest, oldest_size = self._waiting.popleft()
            if not oldest.done():
                await asyncio.wait([oldest])  # its outcome is checked with the others'
            self._bytes -= oldest_size
        return future


async def _partition_for(producer: AIOKafkaProducer, topic: str, key: bytes | None) -> int:
    """The partition aiokafka's default partitioner would pick (random for no key)."""
    partitions = sorted(await producer.partitions_for(topic))
    return _PARTITIONER(key, partitions, partitions)


def _ignore_outcome(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
