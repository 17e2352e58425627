"""Reading topics back for the checker, and the group's progress for the runner.

Two views of a topic:

- :func:`read_committed`: what an ordinary ``read_committed`` consumer returns,
  read to the end (the last stable offset);
- :func:`read_log`: the log itself, fetched with ``read_uncommitted`` up to the
  high watermark with Kafka's Fetch API directly, so every record keeps its
  batch's producer id and the commit and abort markers are kept too (a consumer
  drops both). The checker derives each record's fate from them.

Records are turned into compact :class:`chaos.txnlog.Out` tuples as they arrive:
the full tier reads a few million of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.control_record import ABORT_MARKER, COMMIT_MARKER, ControlRecord
from aiokafka.record.memory_records import MemoryRecords

from chaos.txnlog import Entry, Out

READ_UNCOMMITTED = 0
FETCH_BYTES = 8 * 1024 * 1024


class _Interner:
    """One str per distinct header value (a file's URL repeats in all its records)."""

    def __init__(self) -> None:
        self._seen: dict[bytes, bytes] = {}

    def __call__(self, raw: bytes | None) -> bytes | None:
        if raw is None:
            return None
        return self._seen.setdefault(raw, raw)


def _out(partition: int, offset: int, key: bytes | None, value: bytes | None,
         headers: Iterable[tuple[str, bytes]], intern: _Interner, payload: bool) -> Out:
    return Out.parse(partition, offset, intern(key), value if payload else b"", headers)


async def partitions(bootstrap: str, topic: str) -> list[int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    await asyncio.sleep(0)
    try:
        found = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + 30
        while not found:
            if time.monotonic() > deadline:
                raise AssertionError(f"topic {topic} has no partitions")
            await consumer._client.force_metadata_update()
            found = consumer.partitions_for_topic(topic)
        return sorted(found)
    finally:
        await consumer.stop()


async def read_committed(bootstrap: str, topic: str, timeout: float = 300) -> list[Out]:
    """Every record a read_committed consumer returns, from the start to the end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                enable_auto_commit=False, group_id=None,
                                fetch_max_bytes=64 * 1024 * 1024,
                                max_partition_fetch_bytes=FETCH_BYTES)
    await consumer.start()
    await asyncio.sleep(0)
    intern = _Interner()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions(bootstrap, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[Out] = []
        deadline = time.monotonic() + timeout
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end {end}")
            batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
            for tp, records in batch.items():
                out.extend(_out(tp.partition, r.offset, r.key, r.value, r.headers, intern, True)
                           for r in records)
        return out
    finally:
        await consumer.stop()


async def read_values(bootstrap: str, topic: str) -> list[tuple[int, int, bytes | None]]:
    """(partition, offset, value) of every record (the input topic is not transactional)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                group_id=None, max_partition_fetch_bytes=FETCH_BYTES)
    await consumer.start()
    await asyncio.sleep(0)
    try:
        tps = [TopicPartition(topic, p) for p in await partitions(bootstrap, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[tuple[int, int, bytes | None]] = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
            for tp, records in batch.items():
                out.extend((tp.partition, r.offset, r.value) for r in records)
        return out
    finally:
        await consumer.stop()


async def read_log(bootstrap: str, topic: str, payload: bool = False
                   ) -> tuple[list[Entry], dict[int, tuple[int, int]]]:
    """The raw log of every partition to its high watermark, markers included, and
    each partition's (last stable offset, high watermark) as the last fetch saw them.

    ``payload=False`` drops keys and values (the checker needs only the headers and
    the producer ids from the log; it compares payloads in the read_committed view).
    """
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    intern = _Interner()
    try:
        await client.add_topic(topic)
        entries: list[Entry] = []
        ends: dict[int, tuple[int, int]] = {}
        for p in sorted(client.cluster.partitions_for_topic(topic) or ()):
            ends[p] = await _read_partition(client, topic, p, entries, intern, payload)
        return entries, ends
    finally:
        await client.close()


async def _read_partition(client: AIOKafkaClient, topic: str, p: int, entries: list[Entry],
                          intern: _Interner, payload: bool) -> tuple[int, int]:
    tp = TopicPartition(topic, p)
    offset, high, stable = 0, -1, -1
    deadline = time.monotonic() + 300
    while high < 0 or offset < high:
        if time.monotonic() > deadline:
            raise AssertionError(f"could not read the log of {tp} to {high}")
        leader = client.cluster.leader_for_partition(tp)
        if leader is None or leader == -1:
            await client.force_metadata_update()
            continue
        request = FetchRequest(100, 1, 4 * FETCH_BYTES, READ_UNCOMMITTED,
                               [(topic, [(p, offset, FETCH_BYTES)])])
        response = await client.send(leader, request)
        for _topic, parts in response.topics:
            for _partition, error_code, highwater, *rest in parts:
                error = for_code(error_code)
                if error is not for_code(0):
                    raise error(f"fetching {tp} at {offset}")
                high, stable = highwater, rest[0]
                records = MemoryRecords(rest[-1])
                while records.has_next():
                    batch = records.next_batch()
                    if batch is None:
                        break
                    pid = batch.producer_id
                    if batch.is_control_batch:
                        for rec in batch:
                            marker = ControlRecord.parse(rec.key)
                            control = ("abort" if marker == ABORT_MARKER else
                                       "commit" if marker == COMMIT_MARKER else "other")
                            entries.append(Entry(p, rec.offset, pid, True, control, None))
                    else:
                        txn = batch.is_transactional
                        for rec in batch:
                            if rec.offset < offset:
                                continue
                            entries.append(Entry(p, rec.offset, pid, txn, None, _out(
                                p, rec.offset, rec.key, rec.value, rec.headers, intern,
                                payload)))
                    offset = batch.next_offset
    return stable, high


# -- the group's progress ------------------------------------------------------------------

class GroupView:
    """Long-lived clients for polling the group's committed offsets against the input's
    end offsets; survives a broker restart (calls fail meanwhile and are retried)."""

    def __init__(self, bootstrap: str, input_topic: str, group: str, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.tps = [TopicPartition(input_topic, p) for p in range(partitions)]
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap,
                                        request_timeout_ms=10_000)
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                        request_timeout_ms=10_000)
            try:
                await admin.start()
                await consumer.start()
                await asyncio.sleep(0)
            except BaseException:
                await _quietly(admin.close())
                await _quietly(consumer.stop())
                raise
            self._admin, self._consumer = admin, consumer
        return self._admin, self._consumer

    async def offsets(self) -> tuple[dict[int, int], dict[int, int]] | None:
        """(group committed, input end) per partition; None if the broker did not answer."""
        try:
            admin, consumer = await self._clients()
            committed = await asyncio.wait_for(admin.list_consumer_group_offsets(self.group), 10)
            end = await asyncio.wait_for(consumer.end_offsets(self.tps), 10)
        except (KafkaError, OSError, TimeoutError):
            await self.close()
            return None
        return ({tp.partition: committed[tp].offset for tp in self.tps if tp in committed},
                {tp.partition: end[tp] for tp in self.tps})

    async def lag(self) -> int | None:
        found = await self.offsets()
        if found is None:
            return None
        committed, end = found
        return sum(end[p] - committed.get(p, 0) for p in end)

    async def close(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        if admin is not None:
            await _quietly(admin.close())
        if consumer is not None:
            await _quietly(consumer.stop())


async def _quietly(aw) -> None:
    try:
        await aw
    except Exception:  # noqa: BLE001 - closing after a failure
        pass
