"""The committed offset past transaction markers (app/task/position.py, rules (a) and (b)), on
fakes: the consumer's position is committed only when every record below it has been
committed by the task, with a record's transaction or alone when the task is idle.
The fake consumer's position is wherever a test puts it; what aiokafka does is pinned
against the real broker in tests/integration/test_consumer_position.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import errors as kafka
from aiokafka.structs import TopicPartition

from app.errors import TaskFenced
from app.task import position
from app.task.partition import PartitionTask
from app.task.supervisor import Supervisor
from tests.unit.fakes import (
    FileDownloader,
    MemoryConsumer,
    ScriptedProducer,
    assigned_consumer,
    context,
    record,
    settings,
    until,
)

TP = TopicPartition("in", 0)
FILE = b'{"id":1}\n'
FILES = {f"http://files/{i}": FILE for i in range(4)}


class SteppingConsumer(MemoryConsumer):
    """Counts position reads; ``during_read`` (if set) runs inside the next read, as a
    poll that delivers records while the task waits for the position would."""

    def __init__(self) -> None:
        super().__init__({TP: 5})
        self.assigned.add(TP)
        self.reads = 0
        self.during_read: Callable[[], None] | None = None

    async def position(self, tp: TopicPartition) -> int:
        self.reads += 1
        if self.during_read is not None:
            hook, self.during_read = self.during_read, None
            await asyncio.sleep(0)
            hook()
        return await super().position(tp)


async def started(producer: ScriptedProducer, *flags: str,
                  consumer: MemoryConsumer | None = None
                  ) -> tuple[PartitionTask, MemoryConsumer, FileDownloader]:
    consumer = consumer or assigned_consumer(TP, committed=5)
    downloader = FileDownloader(FILES)
    task = PartitionTask(TP, context(settings(*flags), consumer, downloader,
                                     lambda partition: producer))
    await task.start()
    return task, consumer, downloader


async def test_the_last_record_commits_the_position_past_its_marker():
    producer = ScriptedProducer()
    task, consumer, _ = await started(producer)
    consumer.positions[TP] = 8  # records 5 and 6, the commit marker at 7
    task.deliver([record(5, "http://files/0"), record(6, "http://files/1")])
    await until(lambda: task.committed_offset == 8, "both committed")
    # Record 5 committed while 6 was in the window: offset + 1, not the position.
    assert producer.offset_log == [{TP: 6}, {TP: 8}]
    await task.close(1)


async def test_a_group_ending_with_the_last_record_commits_the_position():
    producer = ScriptedProducer()
    task, consumer, downloader = await started(producer, "--transaction-max-records", "8")
    downloader.gate = asyncio.Event()  # both ready before the head commits
    consumer.positions[TP] = 9         # 5, 6, an aborted record at 7, its marker at 8
    task.deliver([record(5, "http://files/0"), record(6, "http://files/1")])
    await until(lambda: len(downloader.requests) == 2, "both downloading")
    downloader.gate.set()
    await until(lambda: task.committed_offset == 9, "the group committed")
    assert producer.offset_log == [{TP: 9}]
    await task.close(1)


async def test_a_position_not_past_the_record_is_not_used():
    producer = ScriptedProducer()
    task, consumer, _ = await started(producer)
    consumer.positions[TP] = 3  # behind: never commit below offset + 1
    task.deliver([record(5, "http://files/0")])
    await until(lambda: task.committed_offset == 6, "committed")
    assert producer.offset_log == [{TP: 6}]
    await task.close(1)


async def test_a_record_delivered_while_the_position_is_read_keeps_offset_plus_one():
    producer = ScriptedProducer()
    consumer = SteppingConsumer()
    task, _, _ = await started(producer, consumer=consumer)
    consumer.positions[TP] = 8  # record 6 is returned with the position moved to 8
    consumer.during_read = lambda: task.deliver([record(6, "http://files/1")])
    task.deliver([record(5, "http://files/0")])
    await until(lambda: task.committed_offset == 8, "both committed")
    assert producer.offset_log == [{TP: 6}, {TP: 8}]
    await task.close(1)


async def test_a_position_that_does_not_come_is_not_waited_for(monkeypatch):
    monkeypatch.setattr(position, "POSITION_WAIT_S", 0.05)
    producer = ScriptedProducer()
    consumer = SteppingConsumer()
    task, _, _ = await started(producer, consumer=consumer)
    # A consumer resetting its position answers only after its request timeout.
    consumer.position = lambda tp: asyncio.Event().wait()  # type: ignore[method-assign]
    task.deliver([record(5, "http://files/0")])
    await until(lambda: task.committed_offset == 6, "committed with offset + 1", timeout=2)
    assert producer.offset_log == [{TP: 6}]
    await task.close(1)


async def test_an_idle_task_commits_the_position_alone_once():
    producer = ScriptedProducer()
    consumer = SteppingConsumer()
    task, _, _ = await started(producer, consumer=consumer)
    consumer.positions[TP] = 7  # an aborted record at 5, its marker at 6
    task.nudge()
    await until(lambda: task.committed_offset == 7, "the position committed")
    assert producer.offset_log == [{TP: 7}] and producer.sent == []
    assert producer.calls[1:] == ["begin", "offsets", "commit"]
    reads = consumer.reads
    task.nudge()  # the position has not moved since: nothing to commit
    await until(lambda: consumer.reads == reads + 1, "the position read again")
    task.deliver([record(7, "http://files/0")])
    await until(lambda: task.committed_offset == 8, "the next record committed")
    assert producer.offset_log == [{TP: 7}, {TP: 8}]
    await task.close(1)


async def test_an_idle_task_commits_nothing_if_a_record_arrives_during_the_read():
    producer = ScriptedProducer()
    consumer = SteppingConsumer()
    task, _, downloader = await started(producer, consumer=consumer)
    downloader.gate = asyncio.Event()  # record 5 stays in the window
    consumer.positions[TP] = 6
    consumer.during_read = lambda: task.deliver([record(5, "http://files/0")])
    task.nudge()
    await until(lambda: consumer.during_read is None and task.pending == 1, "delivered")
    await until(lambda: len(downloader.requests) == 1, "record 5 downloading")
    assert producer.offset_log == [], "nothing commits past record 5 before it"
    downloader.gate.set()
    await until(lambda: task.committed_offset == 6, "record 5 committed")
    assert producer.offset_log == [{TP: 6}] and producer.committed != []
    await task.close(1)


async def test_a_nudge_while_records_are_pending_commits_nothing_alone():
    producer = ScriptedProducer()
    task, consumer, downloader = await started(producer)
    downloader.gate = asyncio.Event()
    task.deliver([record(5, "http://files/0")])
    consumer.positions[TP] = 9
    task.nudge()
    await until(lambda: len(downloader.requests) == 1, "record 5 downloading")
    downloader.gate.set()
    await until(lambda: task.committed_offset == 9, "record 5 committed, with the position")
    assert producer.offset_log == [{TP: 9}] and len(producer.committed) == 1
    await task.close(1)


async def test_an_aborted_offset_commit_is_tried_again_on_the_next_nudge():
    producer = ScriptedProducer({"offsets": kafka.KafkaTimeoutError()})
    task, consumer, _ = await started(producer)
    consumer.positions[TP] = 7
    task.nudge()
    await until(lambda: "abort" in producer.calls, "the first try aborted")
    assert task.committed_offset == 5 and task.stats.totals["aborted"] == 1
    task.nudge()
    await until(lambda: task.committed_offset == 7, "the second try")
    assert producer.offset_log == [{TP: 7}]
    await task.close(1)


async def test_fencing_during_an_offset_commit_ends_the_task():
    producer = ScriptedProducer({"begin": kafka.ProducerFenced()})
    task, consumer, _ = await started(producer)
    consumer.positions[TP] = 7
    task.nudge()
    with pytest.raises(TaskFenced):
        await asyncio.wait_for(task.wait(), 5)
    assert task.committed_offset == 5
    await task.terminate()


async def test_at_least_once_commits_the_position_through_the_consumer():
    producer = ScriptedProducer()
    task, consumer, _ = await started(producer, "--processing-guarantee", "at_least_once")
    consumer.positions[TP] = 7
    task.nudge()
    await until(lambda: task.committed_offset == 7, "the position committed")
    assert consumer.offsets[TP] == 7 and "begin" not in producer.calls
    await task.close(1)


async def test_the_supervisor_wakes_a_task_short_of_the_last_stable_offset():
    consumer = assigned_consumer(TP, committed=5)
    producer = ScriptedProducer()
    supervisor = Supervisor(context(settings(), consumer, FileDownloader(FILES),
                                    lambda partition: producer))
    supervisor.assign([TP])
    await until(lambda: supervisor.ready, "task running")
    consumer.positions[TP] = consumer.stable[TP] = 7
    supervisor.observe()
    await until(lambda: supervisor.slots[TP].task.committed_offset == 7, "caught up")
    supervisor.observe()
    assert supervisor.stats.lag.labels("0")._value.get() == 0
    assert producer.offset_log == [{TP: 7}]
    await supervisor.close(1)
