"""Repeated inputs, recognised exactly once: a store per input partition, kept in Kafka.

A record is a duplicate when its key (``DEDUP=url``: the normalised file URL;
``content``: the decompressed body) was committed before in the same input
partition. The store remembers a fixed-size digest per key, and every committed
non-duplicate writes its entry to partition p of the compacted ``DEDUP_TOPIC`` in the
same transaction as its outputs and offset, so the store never disagrees with what
was committed. A task restores its partition's store (read_committed, to the high
watermark, every open transaction on it ended) after its committed offset settled,
and before taking records.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

from aiokafka.structs import ConsumerRecord, TopicPartition

from app.config import Settings
from app.dedup.changelog import ChangelogPartitions
from app.files.records import Output, OutRecord, Prepared
from app.kafka.clients import RestoreConsumer

log = logging.getLogger(__name__)
DIGEST_BYTES = 16
_ENTRY = struct.Struct(">qI")  # the first occurrence's offset, and when it was committed
_DEFAULT_PORTS = {"http": 80, "https": 443}
_OFFSET_BITS = 40  # an entry is one int: committed-at seconds above the offset's bits
# How long a restore may stand still before the holder of its partition is fenced: a
# transaction that is committing ends within milliseconds.
SETTLE_AFTER_S = 1.5


def normalise_url(url: str) -> str:
    """Scheme and host lower-cased, default port and fragment dropped; path and query kept."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path, parts.query, ""))


def entry_value(offset: int, at: float) -> bytes:
    """A changelog entry's value: the first occurrence's offset, and when it committed."""
    return _ENTRY.pack(offset, int(at))


def url_key(url: str) -> bytes:
    return hashlib.sha256(normalise_url(url).encode()).digest()[:DIGEST_BYTES]


def content_key(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()[:DIGEST_BYTES]


class DedupStore:
    """One input partition's remembered keys, oldest first, bounded in age and count."""

    def __init__(self, max_entries: int, retention_s: float) -> None:
        self.max_entries, self.retention_s = max_entries, retention_s
        self._entries: dict[bytes, int] = {}
        self.forgotten: list[bytes] = []  # keys to tombstone in the changelog

    def __len__(self) -> int:
        return len(self._entries)

    def first_offset(self, key: bytes) -> int | None:
        packed = self._entries.get(key)
        return None if packed is None else packed & ((1 << _OFFSET_BITS) - 1)

    def remember(self, key: bytes, offset: int, at: float) -> None:
        self._entries[key] = (int(at) << _OFFSET_BITS) | offset

    def restore(self, changes: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        """Apply changelog records (key, value) in order; a None value is a tombstone."""
        entries, unpack, shift = self._entries, _ENTRY.unpack, _OFFSET_BITS
        for key, value in changes:
            if key is None or len(key) != DIGEST_BYTES:
                continue  # not ours: a compacted topic keeps nothing else
            entries.pop(key, None)  # a key's latest entry is its place in the order
            if value is not None:
                offset, at = unpack(value)
                entries[key] = (at << shift) | offset

    def expire(self, now: float) -> None:
        """Forget entries past the retention, and the oldest past the count limit."""
        horizon = int(now - self.retention_s)
        while self._entries:
            key = next(iter(self._entries))
            if (self._entries[key] >> _OFFSET_BITS) >= horizon and (
                    len(self._entries) <= self.max_entries):
                return
            del self._entries[key]
            self.forgotten.append(key)


async def read_to_end(consumer: RestoreConsumer, tp: TopicPartition,
                      apply: Callable[[Iterable[tuple[bytes | None, bytes | None]]], None],
                      settle: Callable[[], Awaitable[None]] | None = None) -> None:
    """Read a compacted partition from its log start to its high watermark as it was at
    the start, ``apply``-ing each batch's (key, value) pairs in order; while the
    position stays put, ``settle`` is called every SETTLE_AFTER_S (Deduplicator.restore)."""
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    end = await consumer.log_end(tp)
    position, moved = await consumer.position(tp), time.monotonic()
    while position < end:
        batch = await consumer.getmany(tp, timeout_ms=1000, max_records=50_000)
        apply((entry.key, entry.value) for entry in batch.get(tp, ()))
        before, position = position, await consumer.position(tp)
        if position > before:
            moved = time.monotonic()
        elif settle is not None and time.monotonic() - moved >= SETTLE_AFTER_S:
            await settle()
            moved = time.monotonic()


class Deduplicator:
    """The store's part in one partition task: restore, then decide at each commit."""

    def __init__(self, mode: str, store: DedupStore, changelog: TopicPartition,
                 clock: Callable[[], float] = time.time,
                 include: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.mode, self.store, self.changelog, self._clock = mode, store, changelog, clock
        self._include = include  # makes sure the changelog partition exists
        self._tombstoning: list[bytes] = []

    async def restore(self, consumer: RestoreConsumer,
                      settle: Callable[[], Awaitable[None]] | None = None) -> int:
        """Read the changelog partition from its log start to its high watermark as it
        was at the start; the number of entries it holds.

        Not to the last stable offset: a transaction a killed replica left open holds it
        back, and entries committed after it would be missed. While the position stays
        put, ``settle`` (fencing that replica) is called every SETTLE_AFTER_S."""
        if self._include is not None:
            await self._include(self.changelog.partition)
        await read_to_end(consumer, self.changelog, self.store.restore, settle)
        self.store.expire(self._clock())
        return len(self.store)

    def known(self, key: bytes) -> bool:
        return self.store.first_offset(key) is not None

    def duplicate_of(self, prepared: Prepared) -> int | None:
        """The offset of the committed original, if ``prepared`` repeats one."""
        if prepared.dedup_key is None:
            return None
        return self.store.first_offset(prepared.dedup_key)

    def records(self, record: ConsumerRecord, prepared: Prepared) -> list[Output]:
        """What the record's transaction writes: its outputs and its changelog entry, or
        nothing for a duplicate."""
        if self.duplicate_of(prepared) is not None:
            return []
        key = prepared.dedup_key
        if key is None or prepared.dead_lettered:
            return prepared.records
        entry = entry_value(record.offset, self._clock())
        return [*prepared.records, OutRecord(self.changelog.topic, key, entry, [],
                                             self.changelog.partition)]

    def tombstones(self) -> list[OutRecord]:
        """Tombstones for the keys forgotten so far, to write in the next transaction."""
        self._tombstoning = self.store.forgotten[:]
        topic, partition = self.changelog.topic, self.changelog.partition
        return [OutRecord(topic, key, None, [], partition)  # type: ignore[arg-type]
                for key in self._tombstoning]

    def committed(self, record: ConsumerRecord, prepared: Prepared) -> None:
        """The record's transaction committed (with the last ``tombstones``)."""
        del self.store.forgotten[:len(self._tombstoning)]
        self._tombstoning = []
        key = prepared.dedup_key
        if key is not None and not prepared.dead_lettered and self.duplicate_of(prepared) is None:
            now = self._clock()
            self.store.remember(key, record.offset, now)
            self.store.expire(now)


def dedup_factory(settings: Settings, changelog_partitions: int
                  ) -> Callable[[int], Deduplicator]:
    """A task's deduplicator for input partition p: changelog partition p, an empty store.
    ``changelog_partitions``: how many DEDUP_TOPIC had at start."""
    changelog = ChangelogPartitions(settings, changelog_partitions)

    def make(partition: int) -> Deduplicator:
        store = DedupStore(settings.dedup_max_entries, settings.dedup_retention)
        return Deduplicator(settings.dedup, store,
                            TopicPartition(str(settings.dedup_topic), partition),
                            include=changelog.include)
    return make
