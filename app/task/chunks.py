"""FILE_CHUNK_RECORDS: a spooled file in consecutive transactions of at most N outputs.

Each chunk's transaction holds its outputs and the file's resume point
(app/task/resume_points.py); the last chunk's holds the input offset and the point's
tombstone instead. The chunks in between commit the input record's own offset again
(where the group already is): the offset commit is what KIP-447 fences a previous
owner's transaction by, and what a new owner's read of the committed offset waits on.

A file is validated whole before its first chunk (app/files/spooling.py), so a malformed
file never emits a chunk. A task that takes a partition over resumes a file at the
chunk after its point, never writing a committed chunk again; a file whose body is not
the one its first chunks came from is dead-lettered (``file_changed``), naming them.
Files in memory are below SPOOL_THRESHOLD_BYTES and are never chunked: one transaction
holds them within the transaction timeout.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from aiokafka.structs import ConsumerRecord, TopicPartition

from app.config import Settings
from app.dedup.changelog import ChangelogPartitions
from app.errors import PoisonError
from app.files.prepare import Preparer
from app.files.records import Output, Prepared, StreamedOutputs
from app.files.streamed import Keyed
from app.kafka.committer import Result
from app.task.resume_points import ResumePoint, ResumePoints

log = logging.getLogger(__name__)
Write = Callable[[ConsumerRecord, Prepared], Awaitable[Result]]


class Committing(Protocol):
    """What a chunked file needs of app/task/record_commit.py's RecordCommitter."""

    async def attempts(self, record: ConsumerRecord, prepared: Prepared,
                       write: Write) -> Prepared | None: ...

    async def whole(self, record: ConsumerRecord, prepared: Prepared) -> Result: ...

    async def write(self, offset: int, records: list[Output]) -> Result: ...

    def done(self, record: ConsumerRecord, prepared: Prepared) -> None: ...

    @property
    def running(self) -> bool: ...


def streamed(prepared: Prepared) -> StreamedOutputs | None:
    """A spooled file's outputs, if that is what ``prepared`` writes."""
    found = [r for r in prepared.records if isinstance(r, StreamedOutputs)]
    return found[0] if found else None


class Chunks:
    """A partition task's chunk mode: its resume points, and how its files are cut."""

    def __init__(self, size: int, points: ResumePoints, preparer: Preparer) -> None:
        self.size, self.points, self.preparer = size, points, preparer

    def applies(self, record: ConsumerRecord, prepared: Prepared) -> bool:
        """The record commits here: a spooled file, or one with a resume point."""
        return record.offset in self.points.points or streamed(prepared) is not None

    async def commit(self, committer: Committing, record: ConsumerRecord,
                     prepared: Prepared) -> bool:
        """Every chunk still to commit; False if closed meanwhile."""
        point = self.points.points.get(record.offset)
        prepared = self._against(record, prepared, point)
        outputs = streamed(prepared)
        if outputs is None:  # a dead letter: in one transaction, with the tombstone
            done = await committer.attempts(record, self.closing(record, prepared,
                                                                 point is not None),
                                            committer.whole)
            if done is not None:
                self.points.committed(record.offset, None)
                committer.done(record, done)
            return done is not None
        return await ChunkedFile(self, committer, record, prepared, outputs, point).commit()

    def _against(self, record: ConsumerRecord, prepared: Prepared,
                 point: ResumePoint | None) -> Prepared:
        """``prepared``, or a ``file_changed`` dead letter if its body is not the one the
        record's committed chunks came from."""
        outputs = streamed(prepared)
        if point is None or prepared.dead_lettered or (
                outputs is not None and outputs.identity == point.identity):
            return prepared
        now = f"SHA-256 {outputs.identity}" if outputs is not None else "not spooled"
        error = PoisonError("file_changed", (
            f"the file changed since its first chunk (SHA-256 {point.identity}, now {now}): "
            f"chunks 0-{point.chunk} (transactions 0-{point.done - 1} of {point.count}) "
            "were committed from it"))
        return self.preparer.dead_letter(record, point.url, error, prepared.attempts,
                                         prepared.dedup_key)

    def closing(self, record: ConsumerRecord, prepared: Prepared, pointed: bool) -> Prepared:
        """``prepared`` with the tombstone of the record's resume point, if it has one."""
        if not pointed:
            return prepared
        tombstone = self.points.tombstone(record.offset)
        return dataclasses.replace(prepared, records=[*prepared.records, tombstone])


class ChunkedFile:
    """One spooled file's chunks, from its resume point (or its start) to its end."""

    def __init__(self, chunks: Chunks, committer: Committing, record: ConsumerRecord,
                 prepared: Prepared, outputs: StreamedOutputs, point: ResumePoint | None
                 ) -> None:
        self.chunks, self.record, self.prepared, self.outputs = chunks, record, prepared, outputs
        self.committer, self.point = committer, point
        self.start = self.first = point.done if point else 0
        self.index = point.chunk + 1 if point else 0
        left = -(-(outputs.total - self.start) // chunks.size)
        self.count = self.index + max(1, left)
        self.cursor = ChunkCursor(outputs.slices)
        self.url = dict(outputs.shared).get("source-url", b"").decode()

    async def commit(self) -> bool:
        committer = self.committer
        if self.point is not None:
            log.info("resuming a chunked file at chunk %d of %d", self.index, self.count,
                     extra={"event": "chunks_resumed", "offset": self.record.offset,
                            "chunk": self.index, "chunks": self.count, "done": self.start})
        try:
            while True:
                part = self._part()
                last = self.index == self.count - 1
                write = self._last if last else functools.partial(self._chunk, part)
                done = await committer.attempts(self.record, dataclasses.replace(
                    self.prepared, records=[part]), write)
                if done is None:
                    return False
                if last or done.dead_lettered:
                    self.chunks.points.committed(self.record.offset, None)
                    committer.done(self.record, done if done.dead_lettered else self._written())
                    return True
                self.chunks.points.committed(self.record.offset, self._point(part))
                self.start, self.index = self.start + part.size, self.index + 1
                if not committer.running:  # closing: the next owner resumes here
                    return False
        finally:
            await self.cursor.close()

    def _part(self) -> StreamedOutputs:
        out, stop = self.outputs, min(self.outputs.total, self.start + self.chunks.size)
        shared = [*out.shared, ("chunk", str(self.index).encode()),
                  ("chunks", str(self.count).encode())]
        return StreamedOutputs(out.topic, shared, out.total,
                               functools.partial(self.cursor.take, self.start, stop),
                               self.start, stop - self.start, out.identity)

    def _written(self) -> Prepared:
        """The file as this task wrote it, from its resume point on (for the counts)."""
        out = self.outputs
        part = StreamedOutputs(out.topic, out.shared, out.total, out.slices, self.first,
                               out.total - self.first, out.identity)
        return dataclasses.replace(self.prepared, records=[part])

    def _point(self, part: StreamedOutputs) -> ResumePoint:
        return ResumePoint(self.url, self.outputs.identity, self.index,
                           part.start + part.size, self.outputs.total)

    async def _chunk(self, part: StreamedOutputs, record: ConsumerRecord,
                     prepared: Prepared) -> Result:
        """A chunk before the last: its outputs and the resume point after it, with the
        input offset where it is (a dead letter, if one was refused, ends the file)."""
        if prepared.dead_lettered:
            return await self._last(record, prepared)
        entry = self.chunks.points.entry(record.offset, self._point(part))
        return await self.committer.write(record.offset, [*prepared.records, entry])

    async def _last(self, record: ConsumerRecord, prepared: Prepared) -> Result:
        """The last chunk (or a dead letter): the input offset after the record, and the
        tombstone of its resume point if one was written."""
        pointed = self.point is not None or self.index > 0
        return await self.committer.whole(record, self.chunks.closing(record, prepared,
                                                                        pointed))


class ChunkCursor:
    """A spooled file's slices cut at chunk boundaries. Read on from one chunk to the next;
    a chunk tried again (or a file resumed) reads the spool from its start, skipping."""

    def __init__(self, slices: Callable[[], AsyncIterator[Keyed]]) -> None:
        self._slices = slices
        self._reading: AsyncIterator[Keyed] | None = None
        self._at = 0  # the file's transaction that the next slice (or _rest) begins with
        self._rest: Keyed | None = None

    async def take(self, start: int, stop: int) -> AsyncIterator[Keyed]:
        """The slices of transactions start .. stop - 1."""
        if self._reading is None or self._at != start:
            await self.close()
            self._reading, self._at = self._slices(), 0
        while self._at < stop:
            keyed = self._rest if self._rest is not None else await anext(self._reading, None)
            if keyed is None:
                raise PoisonError("internal_error", f"the spool file ended at transaction "
                                  f"{self._at}, before {stop}")
            count = len(keyed[1])
            skip, take = max(0, start - self._at), min(count, stop - self._at)
            self._rest = _cut(keyed, take, count) if take < count else None
            self._at += take  # before the yield: the reader may stop at any slice
            if take > skip:
                yield _cut(keyed, skip, take)

    async def close(self) -> None:
        reading, self._reading, self._rest = self._reading, None, None
        aclose = getattr(reading, "aclose", None)
        if aclose is not None:
            await aclose()


def _cut(keyed: Keyed, start: int, stop: int) -> Keyed:
    keys, values = keyed
    return (keys if isinstance(keys, bytes) else keys[start:stop]), values[start:stop]


def chunks_factory(settings: Settings, progress_partitions: int, preparer: Preparer
                   ) -> Callable[[int], Chunks]:
    """A task's chunk mode for input partition p: PROGRESS_TOPIC's partition p.
    ``progress_partitions``: how many PROGRESS_TOPIC had at start."""
    progress = ChangelogPartitions(settings, progress_partitions, "PROGRESS_TOPIC")

    def make(partition: int) -> Chunks:
        points = ResumePoints(TopicPartition(str(settings.progress_topic), partition),
                              include=progress.include)
        return Chunks(settings.file_chunk_records, points, preparer)
    return make
