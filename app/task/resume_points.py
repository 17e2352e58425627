"""Where a chunked file stands: its resume points, kept in the compacted PROGRESS_TOPIC.

With FILE_CHUNK_RECORDS, every chunk of a spooled file but the last commits, in its own
transaction, the file's resume point: keyed by the input record (partition and offset),
it names the file (its body's SHA-256), the chunk just committed and the transactions
done. The last chunk commits the input offset and a tombstone for it. Input partition p's
points live in partition p, written by number, as the dedup changelog's entries
(app/dedup/changelog.py makes and checks both topics).

A task reads its partition's points once, after its committed offset settled, to the
high watermark (app/dedup/store.py's read_to_end: an open transaction a killed replica
left holds the last stable offset back); points at or past the committed offset are the
files to resume.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import orjson
from aiokafka.structs import TopicPartition

from app.dedup.store import read_to_end
from app.files.records import OutRecord
from app.kafka.clients import RestoreConsumer


@dataclass(frozen=True, slots=True)
class ResumePoint:
    url: str
    identity: str  # the body's SHA-256, hex
    chunk: int  # the last chunk committed, 0-based
    done: int  # the file's transactions committed, in chunks 0 .. chunk
    count: int  # the file's transactions

    def value(self) -> bytes:
        return orjson.dumps({"url": self.url, "file_sha256": self.identity,
                             "chunk": self.chunk, "done": self.done, "count": self.count})

    @staticmethod
    def parse(value: bytes) -> ResumePoint:
        entry = orjson.loads(value)
        return ResumePoint(entry["url"], entry["file_sha256"], entry["chunk"], entry["done"],
                           entry["count"])


class ResumePoints:
    """One input partition's resume points: read at the task's start, kept as it commits."""

    def __init__(self, progress: TopicPartition,
                 include: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.changelog = progress  # the name app/task/partition.py's reader expects
        self._include = include  # makes sure the progress partition exists
        self.points: dict[int, ResumePoint] = {}

    def key(self, offset: int) -> bytes:
        return b"%d:%d" % (self.changelog.partition, offset)

    async def restore(self, consumer: RestoreConsumer,
                      settle: Callable[[], Awaitable[None]] | None = None) -> int:
        """Every live point of the partition; how many there are."""
        if self._include is not None:
            await self._include(self.changelog.partition)
        await read_to_end(consumer, self.changelog, self._apply, settle)
        return len(self.points)

    def _apply(self, changes: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        for key, value in changes:
            partition, _, offset = (key or b"").partition(b":")
            if not offset or int(partition) != self.changelog.partition:
                continue  # not ours
            if value is None:
                self.points.pop(int(offset), None)
            else:
                self.points[int(offset)] = ResumePoint.parse(value)

    def entry(self, offset: int, point: ResumePoint) -> OutRecord:
        """The record that commits ``point`` for the input record at ``offset``."""
        topic, partition = self.changelog.topic, self.changelog.partition
        return OutRecord(topic, self.key(offset), point.value(), [], partition)

    def tombstone(self, offset: int) -> OutRecord:
        topic, partition = self.changelog.topic, self.changelog.partition
        return OutRecord(topic, self.key(offset), None, [], partition)  # type: ignore[arg-type]

    def committed(self, offset: int, point: ResumePoint | None) -> None:
        """The transaction holding ``entry`` (a point) or ``tombstone`` (None) committed."""
        if point is None:
            self.points.pop(offset, None)
        else:
            self.points[offset] = point
