"""A partition task through its public methods, on fakes: start, deliver, commit in
offset order, retry, dead-letter, the prefetch window's pause and resume, close."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from aiokafka import errors as kafka
from aiokafka.structs import TopicPartition

from app.dedup.store import dedup_factory
from app.errors import TaskFailed, TaskFenced
from app.files.budget import MemoryBudget
from app.task.partition import PartitionTask, TaskState
from tests.unit.fakes import (
    EmptyChangelog,
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
FILE = b'{"id":1}\n{"id":2}\n'


def urls(n: int) -> dict[str, bytes]:
    return {f"http://files/{i}": FILE for i in range(n)}


async def started(producer: ScriptedProducer, files: dict[str, bytes], *flags: str,
                  committed: int = 5, budget: MemoryBudget | None = None
                  ) -> tuple[PartitionTask, MemoryConsumer, FileDownloader]:
    consumer = assigned_consumer(TP, committed=committed)
    downloader = FileDownloader(files)
    task = PartitionTask(TP, context(settings(*flags), consumer, downloader,
                                     lambda partition: producer, budget=budget))
    await task.start()
    return task, consumer, downloader


async def test_start_initialises_the_producer_before_reading_the_offset_then_seeks():
    producer = ScriptedProducer()
    task, consumer, _ = await started(producer, {})
    assert producer.calls == ["start"]
    assert consumer.positions == {TP: 5} and task.committed_offset == 5
    assert task.state is TaskState.RUNNING and TP not in consumer.paused
    await task.close(1)
    assert task.state is TaskState.CLOSED and producer.calls[-1] == "stop"


async def test_records_commit_one_transaction_each_in_offset_order():
    producer = ScriptedProducer()
    task, _, downloader = await started(producer, urls(3))
    downloader.failures["http://files/0"] = [TimeoutError()]  # the first is slowest to arrive
    task.deliver([record(5 + i, f"http://files/{i}") for i in range(3)])
    await until(lambda: task.committed_offset == 8, "three commits")
    assert producer.offset_log == [{TP: 6}, {TP: 7}, {TP: 8}]
    assert producer.calls.count("commit") == 3
    assert task.stats.totals["committed"] == 3 and task.stats.totals["outputs"] == 6
    await task.close(1)


async def test_a_log_that_went_back_is_committed_at_its_new_offset_and_processed_again():
    producer = ScriptedProducer()
    task, consumer, downloader = await started(producer, urls(3))
    downloader.gate = asyncio.Event()  # offset 5 is still being prepared when the log goes back
    task.deliver([record(5, "http://files/0")])
    task.deliver([record(2, "http://files/1"), record(3, "http://files/2")])
    await until(lambda: task.committed_offset == 2, "the new offset committed alone")
    assert producer.offset_log == [{TP: 2}] and producer.committed == []
    assert consumer.positions[TP] == 2 and TP not in consumer.paused
    assert task.stats.registry.get_sample_value("txingest_input_rewinds_total") == 1
    downloader.gate.set()
    task.deliver([record(2, "http://files/1"), record(3, "http://files/2")])
    await until(lambda: task.committed_offset == 4, "both records of the new log")
    assert producer.offset_log == [{TP: 2}, {TP: 3}, {TP: 4}]
    assert task.stats.totals["committed"] == 2
    await task.close(1)


async def test_an_aborted_transaction_is_retried_after_a_backoff():
    producer = ScriptedProducer({"send": kafka.KafkaTimeoutError()})
    task, _, _ = await started(producer, urls(1))
    task.deliver([record(5, "http://files/0")])
    await until(lambda: task.committed_offset == 6, "the retried commit")
    assert producer.calls[1:] == ["begin", "send", "offsets", "abort",
                                  "begin", "send", "offsets", "commit"]
    assert task.stats.totals["aborted"] == 1 and len(task.context.sleep.delays) == 1  # type: ignore[attr-defined]
    await task.close(1)


async def test_a_record_the_broker_refuses_is_dead_lettered_and_its_bytes_released():
    producer = ScriptedProducer({"send": kafka.MessageSizeTooLargeError()})
    budget = MemoryBudget(1 << 20)
    task, _, _ = await started(producer, urls(1), budget=budget)
    task.deliver([record(5, "http://files/0")])
    await until(lambda: task.committed_offset == 6, "the dead letter's commit")
    assert task.stats.totals["dead_lettered"] == 1 and task.stats.totals["committed"] == 0
    assert b'"reason":"record_too_large"' in producer.committed[0]
    assert budget.used == 0
    await task.close(1)


@pytest.mark.parametrize(("step", "error", "ends"), [
    ("commit", kafka.KafkaTimeoutError(), TaskFailed),
    ("begin", kafka.ProducerFenced(), TaskFenced),
])
async def test_a_final_outcome_ends_the_task(step, error, ends):
    producer = ScriptedProducer({step: error})
    task, _, _ = await started(producer, urls(1))
    task.deliver([record(5, "http://files/0")])
    with pytest.raises(ends):
        await asyncio.wait_for(task.wait(), 5)
    assert task.committed_offset == 5 and not task.ready
    await task.terminate()


async def test_the_window_pauses_the_partition_when_full_and_resumes_when_drained():
    producer = ScriptedProducer()
    task, consumer, downloader = await started(producer, urls(5), "--prefetch-per-partition", "2")
    downloader.gate = asyncio.Event()
    task.deliver([record(5 + i, f"http://files/{i}") for i in range(5)])
    await until(lambda: len(downloader.requests) == 2, "two downloads started")
    assert TP in consumer.paused, "paused while the window is full"
    assert downloader.requests == ["http://files/0", "http://files/1"]
    downloader.gate.set()
    await until(lambda: task.committed_offset == 10, "all five committed")
    assert TP not in consumer.paused, "resumed once there is room"
    await task.close(1)


async def test_close_releases_every_prepared_record_and_takes_nothing_new():
    producer = ScriptedProducer({"begin": [kafka.KafkaTimeoutError()] * 1000})
    budget = MemoryBudget(1 << 20)
    task, consumer, downloader = await started(producer, urls(3), budget=budget)
    task.deliver([record(5 + i, f"http://files/{i}") for i in range(3)])
    await until(lambda: budget.used > 0 and len(downloader.requests) == 3, "prepared")
    await task.close(0.5)
    assert budget.used == 0 and task.state is TaskState.CLOSED
    task.deliver([record(9, "http://files/0")])
    assert task.pending == 0 and TP in consumer.paused


async def test_close_does_not_wait_for_downloads_in_flight():
    producer = ScriptedProducer()
    task, _, downloader = await started(producer, urls(2))
    downloader.gate = asyncio.Event()  # the downloads never finish by themselves
    task.deliver([record(5, "http://files/0"), record(6, "http://files/1")])
    await until(lambda: len(downloader.requests) == 2, "both downloads started")
    await asyncio.wait_for(task.close(timeout=3600), 5)  # cancelled, not waited for
    assert task.state is TaskState.CLOSED and "begin" not in producer.calls


async def test_committed_records_are_freed_while_the_task_waits_for_more():
    import gc

    from app.files.records import Prepared

    producer = ScriptedProducer()
    task, _, _ = await started(producer, {"http://files/big": b'{"only":"this file"}\n'})
    task.deliver([record(5, "http://files/big")])
    await until(lambda: task.committed_offset == 6, "committed")
    for _ in range(3):
        await asyncio.sleep(0)  # the task is now waiting for its next record
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, Prepared)
             and any(r.value == b'{"only":"this file"}' for r in o.each_record())]
    assert alive == [], "the budget released them, so nothing may keep them"
    await task.close(1)


class UnreachableChangelog(EmptyChangelog):
    """A restore consumer whose start fails (the broker unreachable, or a revocation)."""

    def __init__(self) -> None:
        self.stopped = False

    async def start(self) -> None:
        raise kafka.KafkaConnectionError("no broker")

    async def stop(self) -> None:
        self.stopped = True


async def test_a_restore_consumer_that_failed_to_start_is_stopped():
    restore = UnreachableChangelog()
    config = settings("--dedup", "url")
    ctx = dataclasses.replace(
        context(config, assigned_consumer(TP), FileDownloader({}), lambda p: ScriptedProducer()),
        make_dedup=dedup_factory(config, 1), make_restore_consumer=lambda: restore)
    with pytest.raises(kafka.KafkaConnectionError):
        await PartitionTask(TP, ctx).start()
    assert restore.stopped, "its connections are closed, not left to the garbage collector"


class StuckProducer(ScriptedProducer):
    """A broker gone silent: the commit in flight and the producer's stop both hang."""

    async def commit_transaction(self):
        self.calls.append("commit")
        await asyncio.Event().wait()

    async def stop(self):
        self.calls.append("stop")
        await asyncio.Event().wait()


async def test_close_keeps_to_one_budget_for_the_commit_in_flight_and_the_stop():
    # The rebalance timeout is SHUTDOWN_TIMEOUT_S + 10 s (app/kafka/clients.py): a revoke that
    # took the budget twice (wait for the commit, then for the stop) overran it.
    producer = StuckProducer()
    task, _, _ = await started(producer, urls(1), "--shutdown-timeout-s", "1")
    task.deliver([record(5, "http://files/0")])
    await until(lambda: "commit" in producer.calls, "a commit in flight")
    await asyncio.wait_for(task.close(1.0), 1.5)  # raises TimeoutError past the budget
    assert task.state is TaskState.CLOSED and producer.calls[-1] == "stop"
