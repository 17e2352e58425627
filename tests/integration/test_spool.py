"""Files bigger than memory on the real broker: spooled to disk and streamed through one
transaction, exactly once, in bounded memory; a kill mid-transaction; a full spool.

The files are made by the test file server as they are sent (tools/fileserver.py's
Generated), and the outputs are checked as they are read: neither is ever whole in the
test's memory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.integration.harness import (
    create_topics,
    lag,
    produce,
    read_all,
    service_env,
    wait_committed,
    wait_until,
)
from tools.fileserver import Generated

MIB = 1024 * 1024
LINES_PER_PIECE = 8192


def line(name: str, i: int) -> bytes:
    """Transaction ``i`` of file ``name``: compact JSON, about 130 bytes."""
    return (b'{"id":"%s-%d","seq":%d,"amount":%d.%02d,"currency":"EUR",'
            b'"memo":"transfer number %d of the day, exactly once"}'
            % (name.encode(), i, i, i * 7919 % 100000, i % 100, i))


def lines_for(nbytes: int) -> int:
    return nbytes // (len(line("x", 10**6)) + 1)


def ndjson(name: str, count: int, bad_at: int | None = None) -> Generated:
    def pieces() -> Iterator[bytes]:
        for start in range(0, count, LINES_PER_PIECE):
            stop = min(count, start + LINES_PER_PIECE)
            yield b"".join((b"{not json\n" if i == bad_at else line(name, i) + b"\n")
                           for i in range(start, stop))
    return Generated(pieces)


async def assert_streamed_once(bootstrap: str, topic: str, files: dict[str, tuple[str, int]],
                               timeout: float = 300) -> None:
    """Each URL's ``(name, count)`` transactions once, in order, byte-equal, read_committed;
    nothing else. Checked as read, one record at a time."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                enable_auto_commit=False, group_id=None,
                                fetch_max_bytes=16 * MIB, max_partition_fetch_bytes=8 * MIB)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        seen = dict.fromkeys(files, 0)
        deadline = time.monotonic() + timeout
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            assert time.monotonic() < deadline, f"could not read {topic} to its end {end}"
            for records in (await consumer.getmany(timeout_ms=500, max_records=50_000)).values():
                for r in records:
                    _check(r, files, seen)
        assert seen == {url: count for url, (_, count) in files.items()}, seen
    finally:
        await consumer.stop()


def _check(r, files: dict[str, tuple[str, int]], seen: dict[str, int]) -> None:
    headers = dict(r.headers)
    url = headers["source-url"].decode()
    name, count = files[url]
    i = seen[url]
    assert int(headers["index"]) == i, f"{url}: index {headers['index']} where {i} was due"
    assert int(headers["count"]) == count and i < count, f"{url}: more than {count}"
    assert r.value == line(name, i), f"{url}: transaction {i} differs"
    seen[url] = i + 1


def spool_files(spool_dir: Path) -> list[Path]:
    return [p for p in spool_dir.rglob("*") if p.is_file()]


def spooled_env(bootstrap: str, topics, spool_dir: Path, **extra: str) -> dict[str, str]:
    return service_env(bootstrap, topics, SPOOL_DIR=str(spool_dir),
                       SPOOL_THRESHOLD_BYTES=str(8 * MIB), MAX_FILE_BYTES=str(1024 * MIB),
                       MAX_TRANSACTIONS_PER_FILE="10000000", TRANSACTION_TIMEOUT_MS="600000",
                       **extra)


async def test_a_big_file_is_spooled_and_committed_once_in_bounded_memory(
        kafka_bootstrap, file_server, services, tmp_path):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="spool")
    count = lines_for(160 * MIB)
    url = file_server.add_generated("big.ndjson", ndjson("big", count))
    await produce(kafka_bootstrap, topics.input, [url.encode()], topics.partitions)
    spool_dir = tmp_path / "spool"
    service = services(spooled_env(kafka_bootstrap, topics, spool_dir)).start()

    await wait_committed(kafka_bootstrap, topics, 600)
    service.poll()  # reads its peak RSS (VmHWM) while it still runs
    peak_mb = service.peak_rss_mb
    assert spool_files(spool_dir) == [], "the spool file is removed after the commit"
    assert await service.stop() == 0
    await assert_streamed_once(kafka_bootstrap, topics.output, {url: ("big", count)})
    assert await read_all(kafka_bootstrap, topics.dlq) == []
    # In memory this file would take about 2 x 160 MiB + 600 B x 1.2 million objects.
    print(f"peak RSS {peak_mb:.0f} MB for a {count}-transaction file of about 160 MiB")
    assert 0 < peak_mb < 320, f"peak RSS {peak_mb:.0f} MB"


async def _written(bootstrap: str, topic: str) -> int:
    """Records on ``topic`` so far, committed or not (its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def test_kill_9_mid_transaction_then_restart_writes_every_record_once(
        kafka_bootstrap, file_server, services, tmp_path):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="spoolkill")
    count = lines_for(100 * MIB)
    url = file_server.add_generated("kill.ndjson", ndjson("kill", count))
    await produce(kafka_bootstrap, topics.input, [url.encode()], topics.partitions)
    spool_dir = tmp_path / "spool"
    service = services(spooled_env(kafka_bootstrap, topics, spool_dir)).start()

    async def sending() -> bool:  # the transaction is open and half-way
        return await _written(kafka_bootstrap, topics.output) > count // 3
    await wait_until(sending, 600, "the file's transaction to be half sent")
    assert await lag(kafka_bootstrap, topics) == 1, "killed before its commit"
    service.kill()
    assert len(spool_files(spool_dir)) == 1, "the killed process left its spool file"

    service.start()
    await wait_committed(kafka_bootstrap, topics, 600)
    cleaned = service.events("spool_cleaned", start=service.started_at_byte)
    assert [e["files"] for e in cleaned] == [1], cleaned
    assert spool_files(spool_dir) == []
    assert await service.stop() == 0
    await assert_streamed_once(kafka_bootstrap, topics.output, {url: ("kill", count)})


async def test_a_full_spool_waits_a_too_big_file_and_a_bad_line_are_dead_lettered(
        kafka_bootstrap, file_server, services, tmp_path):
    topics = await create_topics(kafka_bootstrap, partitions=2, name="spoolfull")
    count = lines_for(30 * MIB)
    first = file_server.add_generated("a.ndjson", ndjson("a", count))
    second = file_server.add_generated("b.ndjson", ndjson("b", count))
    too_big = file_server.add_generated("c.ndjson", ndjson("c", lines_for(50 * MIB)))
    bad = file_server.add_generated("d.ndjson", ndjson("d", lines_for(20 * MIB),
                                                       bad_at=lines_for(10 * MIB)))
    # Round-robin: a and c on partition 0, b and d on partition 1.
    await produce(kafka_bootstrap, topics.input,
                  [u.encode() for u in (first, second, too_big, bad)], topics.partitions)
    spool_dir = tmp_path / "spool"
    service = services(spooled_env(kafka_bootstrap, topics, spool_dir,
                                   SPOOL_MAX_BYTES=str(40 * MIB))).start()

    await wait_committed(kafka_bootstrap, topics, 600)
    assert service.events("spool_wait"), "a and b do not fit at once: one waited for room"
    assert spool_files(spool_dir) == []
    assert await service.stop() == 0
    await assert_streamed_once(kafka_bootstrap, topics.output,
                               {first: ("a", count), second: ("b", count)})
    letters = {json.loads(d.value)["url"]: json.loads(d.value)
               for d in await read_all(kafka_bootstrap, topics.dlq)}
    assert set(letters) == {too_big, bad}
    assert letters[too_big]["reason"] == "too_large_for_spool"
    assert letters[bad]["reason"] == "invalid_json"
    assert f"line {lines_for(10 * MIB) + 1}:" in letters[bad]["error"]
