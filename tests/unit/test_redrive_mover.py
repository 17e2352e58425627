"""The mover's loop with stand-in clients (its Kafka behaviour is in the integration tests):
what each transaction holds, where the offsets stop, and what a failed send leaves."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import errors as kafka
from aiokafka.partitioner import murmur2
from aiokafka.structs import ConsumerRecord, TopicPartition

from app.config import load_settings
from app.redrive.job import Options, RedriveFailed, Selection, Tally
from app.redrive.mover import Mover
from app.redrive.span import Span

TP = TopicPartition("dlq", 0)
SETTINGS = load_settings(["--dlq-topic", "dlq", "--input-topic", "in", "--group-id", "g"], {})


def record(offset: int, reason: str = "http_error", source: str = "in") -> ConsumerRecord:
    value = orjson.dumps({"url": f"http://x/{offset}", "reason": reason,
                          "source": {"topic": source, "partition": 1, "offset": offset},
                          "input": {"value": f"v{offset}", "encoding": "utf-8"}})
    return ConsumerRecord("dlq", 0, offset, 0, 0, b"k%d" % offset, value, None, 2, 2, [])


class Consumer:
    """Hands out ``fetches`` in turn: (records, position after them)."""

    def __init__(self, fetches: list[tuple[list[ConsumerRecord], int]]) -> None:
        self.fetches = fetches
        self.at = 0

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.at = offset

    async def getmany(self, *tps: TopicPartition, timeout_ms: int, max_records: int) -> dict:
        records, self.at = self.fetches.pop(0)
        return {TP: records} if records else {}

    async def position(self, tp: TopicPartition) -> int:
        return self.at


class Batch:
    def __init__(self) -> None:
        self.records: list[tuple] = []

    def append(self, *, key, value, timestamp, headers):
        self.records.append((key, value, headers))
        return object()

    def size(self) -> int:
        return sum(len(value or b"") for _, value, _ in self.records)

    def close(self) -> None:
        pass


class Producer:
    """Speaks what the service's committer (app/kafka/committer.py) asks of a producer."""

    def __init__(self, fail_send_at: bytes | None = None) -> None:
        self.calls: list[tuple] = []
        self.fail_send_at = fail_send_at

    async def begin_transaction(self) -> None:
        self.calls.append(("begin",))

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future:
        result: asyncio.Future = asyncio.get_running_loop().create_future()
        for _key, value, headers in batch.records:
            self.calls.append(("send", topic, value, partition, dict(headers)["redrive-from"]))
        if any(key == self.fail_send_at for key, _, _ in batch.records):
            result.set_exception(kafka.KafkaTimeoutError())
        else:
            result.set_result(None)
        return result

    async def send_offsets_to_transaction(self, offsets: dict, group: str) -> None:
        self.calls.append(("offsets", offsets[TP], group))

    async def commit_transaction(self) -> None:
        self.calls.append(("commit",))

    async def abort_transaction(self) -> None:
        self.calls.append(("abort",))


def mover(fetches, producer, span: Span | None = None, selection: Selection | None = None
          ) -> Mover:
    options = Options(selection or Selection(), job="j", dry_run=producer is None)
    m = Mover(SETTINGS, options, Tally(), Consumer(fetches), producer,  # type: ignore[arg-type]
              {TP: span or Span(0, 4)})
    m.input_partitions = {0, 1}
    return m


async def test_each_fetch_is_one_transaction_of_its_sends_and_the_job_s_offsets() -> None:
    producer = Producer()
    # A commit marker at offset 3: the last fetch moves the position with no record.
    m = mover([([record(0), record(1, "bad_gzip")], 2), ([record(2)], 3), ([], 4)], producer,
              selection=Selection(reasons=frozenset({"http_error"})))
    await m.run()
    assert producer.calls == [
        ("begin",), ("send", "in", b"v0", 1, b"dlq:0:0"), ("offsets", 2, "g-redrive-j"),
        ("commit",),
        ("begin",), ("send", "in", b"v2", 1, b"dlq:0:2"), ("offsets", 3, "g-redrive-j"),
        ("commit",),
        ("begin",), ("offsets", 4, "g-redrive-j"), ("commit",)]
    assert dict(m.tally.moved) == {"http_error": 2} and m.tally.skipped == 1


async def test_records_past_the_run_s_end_are_neither_sent_nor_committed() -> None:
    producer = Producer()
    m = mover([([record(0), record(1), record(2)], 3)], producer, span=Span(0, 2))
    await m.run()
    assert [c[4] for c in producer.calls if c[0] == "send"] == [b"dlq:0:0", b"dlq:0:1"]
    assert ("offsets", 2, "g-redrive-j") in producer.calls
    assert m.tally.read == 2


async def test_a_failed_send_aborts_and_commits_nothing() -> None:
    producer = Producer(fail_send_at=b"k1")
    m = mover([([record(0), record(1)], 2)], producer)
    with pytest.raises(RedriveFailed, match="transaction failed"):
        await m.run()
    assert [c[0] for c in producer.calls] == ["begin", "send", "send", "offsets", "abort"]
    assert not m.tally.moved and m.done[TP] == 0


async def test_a_dry_run_counts_and_sends_nothing() -> None:
    m = mover([([record(0), record(1)], 2), ([record(2), record(3, "bad_gzip")], 4)], None)
    await m.run()
    assert dict(m.tally.selected) == {"http_error": 3, "bad_gzip": 1}
    assert not m.tally.moved and m.done[TP] == 4


async def test_a_letter_from_another_input_topic_goes_by_key() -> None:
    producer = Producer()
    m = mover([([record(0, source="old-input")], 1)], producer, span=Span(0, 1))
    await m.run()
    by_key = (murmur2(b"k0") & 0x7FFFFFFF) % 2  # the default partitioner's pick
    assert [c[3] for c in producer.calls if c[0] == "send"] == [by_key]
