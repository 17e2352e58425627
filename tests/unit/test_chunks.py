"""The chunk cursor (app/task/chunks.py): a spooled file's slices cut at chunk
boundaries, read on across chunks, read again from the start for a retried chunk."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka.structs import TopicPartition

from app.task.chunks import ChunkCursor
from app.task.resume_points import ResumePoint, ResumePoints

SLICES = [3, 4, 1, 5]  # transactions a slice: 13 in all


class Slices:
    """Slices of the file 0..12, one key each; counts how often it was read from the start."""

    def __init__(self) -> None:
        self.reads = 0

    async def __call__(self) -> AsyncIterator[tuple[list[bytes], list[bytes]]]:
        self.reads += 1
        first = 0
        for size in SLICES:
            numbers = range(first, first + size)
            yield [b"k%d" % n for n in numbers], [b"%d" % n for n in numbers]
            first += size


async def taken(cursor: ChunkCursor, start: int, stop: int, most: int | None = None
                ) -> list[int]:
    """The transactions of chunk start..stop - 1, read up to ``most`` slices."""
    values: list[int] = []
    read = 0
    async for keys, chunk_values in cursor.take(start, stop):
        assert keys == [b"k" + v for v in chunk_values]
        values += map(int, chunk_values)
        read += 1
        if read == most:
            break
    return values


async def test_chunks_read_on_from_one_to_the_next_reading_the_file_once():
    slices = Slices()
    cursor = ChunkCursor(slices)
    assert [await taken(cursor, s, min(s + 5, 13)) for s in (0, 5, 10)] == [
        [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12]]
    assert slices.reads == 1


async def test_a_retried_or_resumed_chunk_reads_from_the_start_and_skips():
    slices = Slices()
    cursor = ChunkCursor(slices)
    assert await taken(cursor, 0, 6) == [0, 1, 2, 3, 4, 5]
    assert await taken(cursor, 6, 11, most=1) == [6]  # an attempt that stopped half-way
    assert await taken(cursor, 6, 11) == [6, 7, 8, 9, 10]
    assert slices.reads == 2
    resumed = ChunkCursor(Slices())
    assert await taken(resumed, 7, 13) == [7, 8, 9, 10, 11, 12]
    await cursor.close()


def test_resume_points_keep_each_record_s_latest_point_of_their_partition_only():
    points = ResumePoints(TopicPartition("progress", 3))
    first, second = ResumePoint("u", "ab", 0, 10, 30), ResumePoint("u", "ab", 1, 20, 30)
    entries = [points.entry(7, first), points.entry(7, second), points.entry(9, first),
               points.tombstone(9), ResumePoints(TopicPartition("progress", 4)).entry(8, first)]
    points._apply((entry.key, entry.value) for entry in entries)
    points._apply([(b"junk", b"{}"), (None, None)])
    assert points.points == {7: second}
