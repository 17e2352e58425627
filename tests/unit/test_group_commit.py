"""Group commit (TRANSACTION_MAX_RECORDS > 1) on fakes: what is ready at the head goes in
one transaction, in offset order; a failed group is redone one record per transaction."""

from __future__ import annotations

import asyncio

from aiokafka.structs import TopicPartition

from app.task.partition import PartitionTask
from tests.unit.fakes import (
    FileDownloader,
    ScriptedProducer,
    assigned_consumer,
    context,
    record,
    settings,
    until,
)

TP = TopicPartition("in", 0)


def files(n: int) -> dict[str, bytes]:
    return {f"http://files/{i}": b'{"file":%d}\n' % i for i in range(n)}


async def ready_group(producer: ScriptedProducer, n: int, *flags: str):
    """A started task whose first n records are all prepared before the head commits."""
    consumer = assigned_consumer(TP)
    downloader = FileDownloader(files(n))
    downloader.gates["http://files/0"] = asyncio.Event()
    task = PartitionTask(TP, context(settings("--transaction-max-records", "4", *flags),
                                     consumer, downloader, lambda p: producer))
    await task.start()
    task.deliver([record(i, f"http://files/{i}") for i in range(n)])
    await until(lambda: len(downloader.requests) == n, "every download started")
    await until(lambda: all(e.pending.done() for e in list(task.window._entries)[1:]),
                "all but the head prepared")
    downloader.gates["http://files/0"].set()
    return task


async def test_ready_records_commit_in_one_transaction_up_to_the_limit():
    producer = ScriptedProducer()
    task = await ready_group(producer, 6)
    await until(lambda: task.committed_offset == 6, "all committed")
    assert producer.offset_log[0] == {TP: 4}, "the first four in one transaction"
    assert producer.calls.count("commit") == 2
    assert sorted(producer.committed) == [b'{"file":%d}' % i for i in range(6)]
    assert task.stats.totals["committed"] == 6
    assert _metric(task, "txingest_transactions_total", result="committed") == 2, (
        "a group counts once as a transaction")
    assert _metric(task, "txingest_records_total", outcome="committed") == 6
    await task.close(1)


def _metric(task: PartitionTask, name: str, **labels: str) -> float | None:
    return task.stats.registry.get_sample_value(name, labels)


async def test_a_refused_record_fails_its_group_and_only_it_is_dead_lettered():
    producer = ScriptedProducer()
    producer.refuse = b'{"file":2}'
    task = await ready_group(producer, 4)
    await until(lambda: task.committed_offset == 4, "all committed")
    assert [o[TP] for o in producer.offset_log] == [4, 1, 2, 3, 3, 4], (
        "the group's offsets (aborted with it), then one record per transaction "
        "(the refused one twice: aborted, then as a dead letter)")
    assert producer.calls.count("abort") == 2, "the group, then the refused record alone"
    assert task.stats.totals["committed"] == 3 and task.stats.totals["dead_lettered"] == 1
    assert b'{"file":1}' in producer.committed and b'{"file":3}' in producer.committed
    await task.close(1)


async def test_one_record_ready_commits_alone_without_waiting():
    producer = ScriptedProducer()
    consumer = assigned_consumer(TP)
    downloader = FileDownloader(files(2))
    downloader.gates["http://files/1"] = asyncio.Event()  # the second never arrives
    task = PartitionTask(TP, context(settings("--transaction-max-records", "4"), consumer,
                                     downloader, lambda p: producer))
    await task.start()
    task.deliver([record(0, "http://files/0"), record(1, "http://files/1")])
    await until(lambda: task.committed_offset == 1, "the head committed on its own")
    assert producer.offset_log == [{TP: 1}]
    await task.close(1)


async def test_a_group_is_cut_before_a_repeat_of_a_record_in_it():
    import dataclasses

    from app.dedup.store import dedup_factory
    from tests.unit.fakes import EmptyChangelog

    producer = ScriptedProducer()
    consumer = assigned_consumer(TP)
    urls = ["http://files/0", "http://files/0", "http://files/1"]
    downloader = FileDownloader(files(2))
    downloader.gates["http://files/0"] = asyncio.Event()
    config = settings("--transaction-max-records", "4", "--dedup", "url")
    ctx = dataclasses.replace(
        context(config, consumer, downloader, lambda p: producer),
        make_dedup=dedup_factory(config, 1), make_restore_consumer=EmptyChangelog)
    task = PartitionTask(TP, ctx)
    await task.start()
    task.deliver([record(i, url) for i, url in enumerate(urls)])
    await until(lambda: all(e.pending.done() for e in list(task.window._entries)[2:]),
                "the last one prepared")
    downloader.gates["http://files/0"].set()
    await until(lambda: task.committed_offset == 3, "all committed")
    assert producer.offset_log[0] == {TP: 1}, "the group stops before the repeat"
    assert sorted(v for v in producer.committed if v.startswith(b"{")) == [
        b'{"file":0}', b'{"file":1}']
    assert task.stats.totals["duplicates"] == 1 and task.stats.totals["committed"] == 2
    await task.close(1)
