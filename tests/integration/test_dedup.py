"""DEDUP on the real broker: repeats write nothing but their offset, across windows,
restarts and kills; dead letters are not remembered; retention forgets; a wrong
changelog topic stops the service at start."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.harness import (
    Route,
    assert_exactly_once,
    create_topics,
    encode,
    left_open,
    make_items,
    produce,
    read_all,
    service_env,
    wait_committed,
    wait_until,
)
from tools.kafka_io import end_offsets, unique

LEFT_OPEN_TIMEOUT_MS = 120_000  # the service's default: a restore must not wait it out


def dedup_env(bootstrap, topics, mode="url", **extra):
    return service_env(bootstrap, topics, DEDUP=mode, DEDUP_TOPIC=unique("dedup"),
                       DEDUP_REPLICATION_FACTOR="1", **extra)


def events(service, name: str) -> list[dict]:
    return service.events(name)


def serve(file_server, name: str, count: int) -> tuple[str, list[bytes]]:
    items = make_items(name, count)
    body, headers = encode(items, "ndjson")
    return file_server.add(f"{name}.ndjson", Route(body, headers=headers)), items


async def test_repeats_in_one_window_and_after_a_restart_write_nothing(
        kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="dedup")
    a, items_a = serve(file_server, "a", 4)
    b, items_b = serve(file_server, "b", 3)
    upper = a.replace("http://127.0.0.1", "HTTP://127.0.0.1") + "#fragment"
    await produce(kafka_bootstrap, topics.input, [a.encode(), upper.encode(), b.encode()], 1)
    env = dedup_env(kafka_bootstrap, topics)
    service = services(env).start()
    await wait_committed(kafka_bootstrap, topics)
    assert await service.stop() == 0
    assert [e["original_offset"] for e in events(service, "duplicate")] == [0]
    downloads = file_server.routes["a.ndjson"].requests  # the copy in the window may be fetched

    await produce(kafka_bootstrap, topics.input, [b.encode(), a.encode()], 1)
    again = services(env, name="pod-1").start()
    await wait_committed(kafka_bootstrap, topics)
    assert await again.stop() == 0
    assert sorted(e["original_offset"] for e in events(again, "duplicate")) == [0, 2]
    assert [e["entries"] for e in events(again, "restored")] == [2]
    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), {a: items_a, b: items_b})
    assert await read_all(kafka_bootstrap, topics.dlq) == []
    assert file_server.routes["a.ndjson"].requests == downloads, "a known repeat is not fetched"


async def test_content_mode_catches_the_same_body_under_another_query(
        kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="dedupc")
    url, items = serve(file_server, "signed", 5)
    await produce(kafka_bootstrap, topics.input,
                  [f"{url}?sig=one".encode(), f"{url}?sig=two".encode()], 1)
    service = services(dedup_env(kafka_bootstrap, topics, mode="content")).start()
    await wait_committed(kafka_bootstrap, topics)
    assert await service.stop() == 0
    outputs = await read_all(kafka_bootstrap, topics.output)
    assert [r.value for r in outputs] == items
    assert len(events(service, "duplicate")) == 1


async def test_a_dead_lettered_url_is_not_remembered(kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="dedupd")
    items = make_items("late", 2)
    body, _ = encode(items, "ndjson")
    route = Route(body, fail_first=1, fail_status=404)  # missing at first, there later
    url = file_server.add("late.ndjson", route)
    await produce(kafka_bootstrap, topics.input, [url.encode()], 1)
    env = dedup_env(kafka_bootstrap, topics)
    service = services(env).start()
    await wait_committed(kafka_bootstrap, topics)
    await produce(kafka_bootstrap, topics.input, [url.encode()], 1)
    await wait_committed(kafka_bootstrap, topics)
    assert await service.stop() == 0
    assert len(await read_all(kafka_bootstrap, topics.dlq)) == 1
    assert [r.value for r in await read_all(kafka_bootstrap, topics.output)] == items
    assert events(service, "duplicate") == []


async def test_retention_forgets_and_tombstones(kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="dedupr")
    url, items = serve(file_server, "old", 2)
    other, other_items = serve(file_server, "other", 1)
    env = dedup_env(kafka_bootstrap, topics, DEDUP_RETENTION="1s")
    await produce(kafka_bootstrap, topics.input, [url.encode()], 1)
    service = services(env).start()
    await wait_committed(kafka_bootstrap, topics)
    await asyncio.sleep(2.5)  # the stimulus: the entry's age passes DEDUP_RETENTION
    await produce(kafka_bootstrap, topics.input, [other.encode(), url.encode()], 1)
    await wait_committed(kafka_bootstrap, topics)
    assert await service.stop() == 0
    assert events(service, "duplicate") == []
    values = [r.value for r in await read_all(kafka_bootstrap, topics.output)]
    assert values == items + other_items + items
    changelog = await read_all(kafka_bootstrap, env["DEDUP_TOPIC"])
    assert any(r.value is None for r in changelog), "the forgotten key is tombstoned"


async def test_a_kill_mid_transaction_redoes_the_original_once_and_skips_the_copy(
        kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="dedupk")
    big = b"".join(b'{"i":%d}\n' % i for i in range(300_000))
    url = file_server.add("big.ndjson", Route(big))
    await produce(kafka_bootstrap, topics.input, [url.encode(), url.encode()], 1)
    env = dedup_env(kafka_bootstrap, topics)
    service = services(env).start()

    async def open_transaction() -> bool:
        uncommitted = await end_offsets(kafka_bootstrap, topics.output, "read_uncommitted")
        return sum(uncommitted.values()) > 0
    await wait_until(open_transaction, 90, "the original's outputs being written", every=0.02)
    stable = await end_offsets(kafka_bootstrap, topics.output, "read_committed")
    service.kill()
    assert sum(stable.values()) == 0, "killed inside the original's transaction"
    restarted = services(env, name="pod-1").start()
    await wait_committed(kafka_bootstrap, topics, timeout=180)
    assert await restarted.stop() == 0
    outputs = await read_all(kafka_bootstrap, topics.output)
    assert len(outputs) == 300_000 and outputs[-1].value == b'{"i":299999}'
    assert [e["original_offset"] for e in events(restarted, "duplicate")] == [0]


async def test_a_changelog_topic_that_does_not_fit_stops_the_service(
        kafka_bootstrap, services):
    topics = await create_topics(kafka_bootstrap, partitions=2, name="dedupw")
    wrong = unique("dedup-wrong")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(wrong, 2, 1)])  # not compacted
    finally:
        await admin.close()
    env = {**dedup_env(kafka_bootstrap, topics), "DEDUP_TOPIC": wrong}
    service = services(env).start()
    assert await service.wait(60) == 2
    errors = [e for e in map(json.loads, filter(lambda line: line.startswith("{"),
                                                 service.log_text().splitlines()))
              if e["level"] == "error"]
    assert len(errors) == 1 and "cleanup.policy" in errors[0]["msg"], errors


@pytest.mark.parametrize("holder", ["gone", "pod-1"])
async def test_a_transaction_left_open_on_the_changelog_hides_no_entry_from_a_restore(
        kafka_bootstrap, file_server, services, holder):
    """An entry committed behind a transaction left open (by a replica gone from the
    group, or by the restoring pod's own previous process on a slot it no longer takes)
    is restored: the open transaction is fenced, not waited out, and the repeat of that
    entry's file writes nothing."""
    topics = await create_topics(kafka_bootstrap, partitions=1, name="dedupo")
    a, items_a = serve(file_server, "a", 2)
    b, items_b = serve(file_server, "b", 3)
    env = dedup_env(kafka_bootstrap, topics)
    first = services(env).start()
    await produce(kafka_bootstrap, topics.input, [a.encode()], 1)
    await wait_committed(kafka_bootstrap, topics)
    async with left_open(kafka_bootstrap, f"{topics.group}-{holder}-7", env["DEDUP_TOPIC"],
                         LEFT_OPEN_TIMEOUT_MS):
        await produce(kafka_bootstrap, topics.input, [b.encode()], 1)
        await wait_committed(kafka_bootstrap, topics)  # b's entry lies behind the open one
        assert await first.stop() == 0
        await produce(kafka_bootstrap, topics.input, [b.encode(), a.encode()], 1)
        restorer = services(env, name="pod-1").start()
        await wait_committed(kafka_bootstrap, topics, timeout=LEFT_OPEN_TIMEOUT_MS / 2000)
        assert await restorer.stop() == 0
    assert sorted(e["original_offset"] for e in events(restorer, "duplicate")) == [0, 1]
    assert [e["entries"] for e in events(restorer, "restored")] == [2]
    assert [e["transactional_id"] for e in events(restorer, "zombie_fenced")] == [
        f"{topics.group}-{holder}-7"]
    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), {a: items_a, b: items_b})
