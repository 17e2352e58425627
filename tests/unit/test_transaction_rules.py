"""The commit rules of PartitionTask, with a scripted producer (pure logic).

The same behaviour is exercised against the real broker in tests/integration.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import errors as kafka
from aiokafka.structs import ConsumerRecord, TopicPartition

from app.config import load_settings
from app.partition import PartitionTask, TaskFailed, TaskFenced
from app.prepare import ByteBudget, OutRecord, Prepared, Preparer
from app.stats import Stats


class ScriptedBatch:
    """Holds two records, like a full record batch."""

    def __init__(self) -> None:
        self.records: list[bytes] = []

    def append(self, *, key, value, timestamp, headers):
        if len(self.records) == 2:
            return None
        self.records.append(value)
        return object()


class ScriptedProducer:
    """Records calls; raises the scripted error at the named step once."""

    def __init__(self, fail: dict[str, BaseException]) -> None:
        self.fail = dict(fail)
        self.calls: list[str] = []
        self.sent: list[bytes] = []

    async def _step(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail.pop(name)

    async def begin_transaction(self):
        await self._step("begin")

    async def partitions_for(self, topic):
        return {0, 1, 2}

    def create_batch(self):
        return ScriptedBatch()

    async def send_batch(self, batch, topic, *, partition):
        assert partition in (0, 1, 2), "the task names the partition of every batch"
        self.calls.append("send")
        self.sent.extend(batch.records)
        future = asyncio.get_running_loop().create_future()
        error = self.fail.pop("send", None)
        future.set_exception(error) if error else future.set_result(None)
        return future

    async def send_offsets_to_transaction(self, offsets, group_id):
        await self._step("offsets")

    async def commit_transaction(self):
        await self._step("commit")

    async def abort_transaction(self):
        await self._step("abort")


def make_task(producer: ScriptedProducer) -> PartitionTask:
    settings = load_settings(["--retry-backoff-s", "0.001"], {})
    stats = Stats()
    preparer = Preparer(settings, None, ByteBudget(1 << 20), stats)  # type: ignore[arg-type]
    task = PartitionTask(TopicPartition("in", 0), settings, None, preparer, stats,  # type: ignore[arg-type]
                         lambda p: producer)  # type: ignore[arg-type,return-value]
    task._producer = producer  # type: ignore[assignment]
    return task


RECORD = ConsumerRecord("in", 0, 41, 0, 0, b"k", b"http://x/a", None, 1, 10, [])
PREPARED = Prepared([OutRecord("out", b"k", b"{}", [])], dead_lettered=False, attempts=1, nbytes=2)


async def test_happy_path_sends_then_offsets_then_commit():
    producer = ScriptedProducer({})
    task = make_task(producer)
    assert await task._commit(RECORD, PREPARED)
    assert producer.calls == ["begin", "send", "offsets", "commit"]
    assert task.stats.totals["committed"] == 1 and task.stats.totals["outputs"] == 1


async def test_failed_send_is_aborted_and_retried_not_committed():
    producer = ScriptedProducer({"send": kafka.KafkaTimeoutError()})
    task = make_task(producer)
    assert await task._commit(RECORD, PREPARED)
    assert producer.calls == ["begin", "send", "abort", "begin", "send", "offsets", "commit"]
    assert task.stats.totals["aborted"] == 1


async def test_unknown_commit_outcome_is_never_aborted():
    producer = ScriptedProducer({"commit": kafka.KafkaTimeoutError()})
    task = make_task(producer)
    with pytest.raises(TaskFailed, match="commit outcome unknown"):
        await task._commit(RECORD, PREPARED)
    assert "abort" not in producer.calls


@pytest.mark.parametrize("step", ["begin", "offsets", "commit"])
async def test_fencing_at_any_step_drops_the_task(step):
    producer = ScriptedProducer({step: kafka.ProducerFenced()})
    with pytest.raises(TaskFenced):
        await make_task(producer)._commit(RECORD, PREPARED)
    assert "abort" not in producer.calls


async def test_broker_refusing_a_record_dead_letters_it():
    producer = ScriptedProducer({"send": kafka.MessageSizeTooLargeError()})
    task = make_task(producer)
    assert await task._commit(RECORD, PREPARED)
    assert producer.calls[-4:] == ["begin", "send", "offsets", "commit"]
    assert task.stats.totals["dead_lettered"] == 1
    assert task.stats.totals["committed"] == 0


async def test_injected_abort_aborts_after_the_sends_then_commits(monkeypatch):
    producer = ScriptedProducer({})
    task = make_task(producer)
    task.settings = load_settings(["--test-abort-rate", "0.5", "--retry-backoff-s", "0.001"], {})
    draws = iter([0.1, 0.9])  # first attempt aborted, second not
    monkeypatch.setattr("app.partition.random.random", lambda: next(draws))
    assert await task._commit(RECORD, PREPARED)
    assert producer.calls == ["begin", "send", "offsets", "abort",
                              "begin", "send", "offsets", "commit"]


async def test_at_least_once_sends_then_commits_the_offset_without_a_transaction():
    class Consumer:
        commits: list = []

        async def commit(self, offsets):
            self.commits.append(offsets)

    producer = ScriptedProducer({})
    task = make_task(producer)
    task._exactly_once = False
    task.consumer = Consumer()  # type: ignore[assignment]
    assert await task._commit(RECORD, PREPARED)
    assert producer.calls == ["send"]
    assert task.consumer.commits == [{TopicPartition("in", 0): 42}]  # type: ignore[attr-defined]


async def test_records_are_packed_into_batches_and_keep_their_order_per_key():
    records = [OutRecord("out", b"ab"[i % 2:i % 2 + 1], str(i).encode(), []) for i in range(7)]
    producer = ScriptedProducer({})
    task = make_task(producer)
    assert await task._commit(RECORD, Prepared(records, dead_lettered=False, attempts=1,
                                               nbytes=7))
    assert sorted(producer.sent) == sorted(r.value for r in records), "each record once"
    for key in (b"a", b"b"):
        mine = [r.value for r in records if r.key == key]
        assert [v for v in producer.sent if v in mine] == mine
    assert 4 <= producer.calls.count("send") <= 5  # batches of two, not one send per record


async def test_a_failed_later_batch_aborts_the_whole_transaction():
    records = [OutRecord("out", b"k", str(i).encode(), []) for i in range(5)]
    producer = ScriptedProducer({})
    original = producer.send_batch
    batches = 0

    async def second_fails(batch, topic, *, partition):
        nonlocal batches
        batches += 1
        if batches == 2:
            producer.fail["send"] = kafka.KafkaTimeoutError()
        return await original(batch, topic, partition=partition)

    producer.send_batch = second_fails  # type: ignore[method-assign]
    task = make_task(producer)
    assert await task._commit(RECORD, Prepared(records, dead_lettered=False, attempts=1,
                                               nbytes=5))
    assert producer.calls == ["begin", "send", "send", "send", "abort",
                              "begin", "send", "send", "send", "offsets", "commit"]
