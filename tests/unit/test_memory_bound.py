"""The memory budget inside running partition tasks (fakes): big files on many partitions
under a small budget all commit, nothing deadlocks, and what is counted never exceeds
the limit plus one file's worth."""

from __future__ import annotations

import asyncio

from aiokafka.structs import TopicPartition

from app.files.budget import MemoryBudget
from app.files.meter import BODY_COST, OBJECT_COST
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

ITEMS = 1500  # each file outgrows its first admission (ADMISSION_BYTES)


def big_file(name: str) -> bytes:
    return b"".join(b'{"id":"%s-%d","amount":"%s"}\n' % (name.encode(), i, b"9" * 60)
                    for i in range(ITEMS))


def file_cost(body: bytes) -> int:
    return BODY_COST * len(body) + OBJECT_COST * body.count(b"{")


async def test_big_files_on_many_partitions_commit_within_the_bound():
    partitions, per_partition = 4, 3
    files = {f"http://files/{p}-{i}": big_file(f"{p}-{i}")
             for p in range(partitions) for i in range(per_partition)}
    worst = max(file_cost(body) for body in files.values())
    budget = MemoryBudget(int(worst * 1.5))  # room for one file and a half
    tps = [TopicPartition("in", p) for p in range(partitions)]
    consumer = assigned_consumer(*tps)
    downloader = FileDownloader(files)
    downloader.piece = 4096
    ctx = context(settings("--prefetch-per-partition", "3"), consumer, downloader,
                  lambda partition: ScriptedProducer(), budget=budget)
    tasks = [PartitionTask(tp, ctx) for tp in tps]
    for task in tasks:
        await task.start()
    for p, task in enumerate(tasks):
        task.deliver([record(i, f"http://files/{p}-{i}", partition=p)
                      for i in range(per_partition)])
    await until(lambda: all(t.committed_offset == per_partition for t in tasks),
                "every file committed", timeout=30)
    assert ctx.stats.totals["committed"] == partitions * per_partition
    assert ctx.stats.totals["dead_lettered"] == 0
    assert budget.peak <= budget.limit + worst, (budget.peak, budget.limit, worst)
    assert ctx.stats.totals["retries"] > 0, "some downloads had to wait for room"
    await asyncio.gather(*(t.close(1) for t in tasks))
    assert budget.used == 0
