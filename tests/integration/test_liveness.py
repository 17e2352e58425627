"""Never wedged, never silent (real brokers of their own): a Kafka that is down at start
keeps the liveness probe green, an ACL the broker refuses makes the partition wait and
say so once instead of a crash loop, and a commit whose broker stops answering ends
at the transaction timeout instead of hanging."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from app.config import Settings, load_settings
from app.files.budget import MemoryBudget
from app.files.fetch import Downloader, DownloadLimits
from app.files.prepare import Preparer
from app.kafka.clients import producer_factory
from app.kafka.committer import make_committer
from app.ops.stats import Stats
from app.task.context import TaskContext
from app.task.partition import PartitionTask
from app.task.producers import producer_source
from tests.integration.harness import (
    Route,
    assert_exactly_once,
    create_topics,
    encode,
    http_get,
    make_items,
    metric,
    produce,
    read_all,
    sampled,
    service_env,
    wait_committed,
    wait_ready,
    wait_until,
)
from tools import local_kafka
from tools.kafka_io import AUTHORIZER_PROPERTIES, deny_writes
from tools.local_kafka import free_port


def add_files(server, prefix: str, count: int, delay: float = 0.0
              ) -> dict[str, list[bytes]]:
    expected = {}
    for n in range(count):
        items = make_items(f"{prefix}{n}", 1 + n % 3)
        route = Route(encode(items, "ndjson")[0], delay=delay)
        expected[server.add(f"{prefix}/{n}", route)] = items
    return expected


async def test_health_holds_while_kafka_is_down_at_start_and_work_proceeds_after(
        file_server, services, tmp_path: Path):
    # The case is 3 minutes down against HEALTH_STALL_S=60, probed every 10 s;
    # here the same ratios in less time: 45 s down against 10 s, probed every 3 s.
    data = tmp_path / "kafka"
    broker = await asyncio.to_thread(local_kafka.start, data=data)
    try:
        topics = await create_topics(broker.bootstrap, partitions=2, name="down")
        await asyncio.to_thread(local_kafka.stop, data, False)
        port = free_port()
        service = services(service_env(broker.bootstrap, topics, HTTP_PORT=str(port),
                                       HEALTH_STALL_S="10")).start()
        probes = []
        for _ in range(15):
            await asyncio.sleep(3)  # the probe's period, not a wait for a condition
            try:
                probes.append((await http_get(port, "/healthz"))[0])
            except OSError:
                probes.append(0)  # not listening yet: the kubelet would count a failure
        assert probes.count(200) == len(probes), f"/healthz while Kafka was down: {probes}"
        assert service.events("waiting_for_kafka"), "it was really waiting"
        await asyncio.to_thread(local_kafka.restart, data)
        expected = add_files(file_server, "down", 6)
        await produce(broker.bootstrap, topics.input, [u.encode() for u in expected], 2)
        await wait_committed(broker.bootstrap, topics, timeout=120)
        assert service.alive, "the same process did the work"
        assert_exactly_once(await read_all(broker.bootstrap, topics.output), expected)
        assert await service.stop(timeout=30) == 0
    finally:
        await asyncio.to_thread(local_kafka.stop, data)


async def test_a_refused_acl_makes_its_partition_wait_and_say_so_once(
        file_server, services, tmp_path: Path):
    data = tmp_path / "kafka"
    broker = await asyncio.to_thread(local_kafka.start, data=data,
                                     extra=AUTHORIZER_PROPERTIES)
    try:
        bootstrap = broker.bootstrap
        topics = await create_topics(bootstrap, partitions=2, name="acl")
        await deny_writes(bootstrap, topics.dlq)
        port = free_port()
        service = services(service_env(bootstrap, topics, HTTP_PORT=str(port),
                                       RETRY_BACKOFF_MAX_S="2")).start()
        await wait_ready(port)
        expected = add_files(file_server, "acl", 8)
        missing = file_server.url("acl/missing")  # a 404: its dead letter needs the DLQ
        urls = [*expected, missing]  # round-robin: the 404 is the last on partition 0
        await produce(bootstrap, topics.input, [u.encode() for u in urls], 2)

        assert await service.wait_event("unauthorized", 90), "the refusal was logged"
        async def waiting() -> bool:
            return await sampled(port, "txingest_partition_unauthorized", partition="0") == 1
        await wait_until(waiting, 30, "the unauthorized gauge")
        before = await sampled(port, "txingest_task_restarts_total", partition="0",
                               cause="unauthorized")
        await asyncio.sleep(10)  # the window in which a crash loop would spin
        during = await sampled(port, "txingest_task_restarts_total", partition="0",
                               cause="unauthorized") - before
        assert during <= 10 / 2 + 1, f"{during} restarts in 10 s: a loop, not a wait"

        await deny_writes(bootstrap, topics.dlq, denied=False)
        await wait_committed(bootstrap, topics, timeout=90)
        assert_exactly_once(await read_all(bootstrap, topics.output), expected)
        letters = await read_all(bootstrap, topics.dlq)
        assert len(letters) == 1 and missing.encode() in letters[0].value
        assert len(service.events("unauthorized")) == 1, "one line, not one per try"
        await wait_until(lambda: _gauge_clear(port), 30, "the gauge back at 0")
        assert await service.stop(timeout=30) == 0
    finally:
        await asyncio.to_thread(local_kafka.stop, data)


async def _gauge_clear(port: int) -> bool:
    return await sampled(port, "txingest_partition_unauthorized", partition="0") == 0


async def test_a_commit_whose_broker_stops_answering_ends_at_the_transaction_timeout(
        file_server, services, tmp_path: Path):
    data = tmp_path / "kafka"
    broker = await asyncio.to_thread(local_kafka.start, data=data)
    try:
        bootstrap = broker.bootstrap
        topics = await create_topics(bootstrap, partitions=1, name="hang")
        port = free_port()
        service = services(service_env(bootstrap, topics, HTTP_PORT=str(port),
                                       TRANSACTION_TIMEOUT_MS="8000",
                                       SHUTDOWN_TIMEOUT_S="5")).start()
        await wait_ready(port)
        # Slow downloads keep the task busy: the broker is paused between two commits
        # or inside one; either way the next commit is in flight while it is paused.
        expected = add_files(file_server, "hang", 40, delay=1.0)
        await produce(bootstrap, topics.input, [u.encode() for u in expected], 1)
        async def committing() -> bool:
            return await sampled(port, "txingest_transactions_total", result="committed") >= 3
        await wait_until(committing, 60, "a few commits")
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            async def failed() -> bool:
                text = (await http_get(port, "/metrics"))[1]
                return any((metric(text, "txingest_commit_failures_total", outcome=o) or 0) > 0
                           for o in ("timed_out", "unknown"))
            await wait_until(failed, 30, "the hanging commit ended while the broker is paused")
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        await wait_committed(bootstrap, topics, timeout=120)
        assert_exactly_once(await read_all(bootstrap, topics.output), expected)
        assert await service.stop(timeout=30) == 0
    finally:
        await asyncio.to_thread(local_kafka.stop, data)


async def test_the_lag_of_a_paused_partition_keeps_counting(
        kafka_bootstrap, file_server, services):
    # A full window pauses its partition; a paused partition is not fetched, so the lag
    # once froze at its last fetch's last stable offset.
    topics = await create_topics(kafka_bootstrap, partitions=1, name="paused")
    port = free_port()
    service = services(service_env(kafka_bootstrap, topics, HTTP_PORT=str(port),
                                   PREFETCH_PER_PARTITION="1",
                                   DOWNLOAD_READ_TIMEOUT_S="60")).start()
    await wait_ready(port)
    slow = add_files(file_server, "paused-slow", 1, delay=40.0)
    await produce(kafka_bootstrap, topics.input, [u.encode() for u in slow], 1)
    async def holding() -> bool:
        return await sampled(port, "txingest_inflight_records") == 1
    await wait_until(holding, 60, "the slow file in the window")
    behind = add_files(file_server, "paused", 20)
    await produce(kafka_bootstrap, topics.input, [u.encode() for u in behind], 1)
    async def counted() -> bool:
        return await sampled(port, "txingest_consumer_lag", partition="0") >= 20
    # Well before the slow file's answer: then the partition is fetched again anyway.
    await wait_until(counted, 20, "the lag to count the records behind the paused window")
    await wait_committed(kafka_bootstrap, topics, timeout=90)
    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), {**slow, **behind})
    assert await service.stop(timeout=30) == 0


async def test_a_task_closes_within_one_budget_when_its_broker_stops_answering(
        file_server, tmp_path: Path):
    # A revoke closes its tasks within SHUTDOWN_TIMEOUT_S; the rebalance timeout is that
    # plus 10 s. The close once waited the budget for the commit in flight, then again
    # for the producer's stop: twice the budget with a broker that stopped answering.
    data = tmp_path / "kafka"
    broker = await asyncio.to_thread(local_kafka.start, data=data)
    try:
        topics = await create_topics(broker.bootstrap, partitions=1, name="revoke")
        expected = add_files(file_server, "revoke", 30)
        await produce(broker.bootstrap, topics.input, [u.encode() for u in expected], 1)
        settings = load_settings([], service_env(broker.bootstrap, topics,
                                                 SHUTDOWN_TIMEOUT_S="4"))
        async with running_task(settings, TopicPartition(topics.input, 0)) as (task, feed):
            await wait_until(feed, 60, "a first commit")
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                await feed()  # what is left in the window: its next commit hangs
                await asyncio.wait_for(task.close(4), 5)  # TimeoutError past the budget
            finally:
                os.kill(broker.pid, signal.SIGCONT)
    finally:
        await asyncio.to_thread(local_kafka.stop, data)


@contextlib.asynccontextmanager
async def running_task(settings: Settings, tp: TopicPartition):
    """One partition task of the service's own parts, on a consumer assigned ``tp``;
    ``feed()`` hands it what the consumer has and says whether it has committed."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=settings.group_id, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")
    downloader = Downloader(DownloadLimits.from_settings(settings))
    await consumer.start()
    await downloader.start()
    consumer.assign([tp])
    stats = Stats()
    task = PartitionTask(tp, TaskContext(
        settings, consumer, Preparer(settings, downloader, MemoryBudget(1 << 28), stats),
        stats, make_committer(settings, consumer),
        producer_source(settings, producer_factory(settings), stats)))
    await task.start()

    async def feed() -> bool:
        task.deliver((await consumer.getmany(tp, timeout_ms=100)).get(tp, []))
        return task.progressed

    try:
        yield task, feed
    finally:
        await task.terminate(5)
        await task.context.producers.close(5)
        await consumer.stop()
        await downloader.close()
