"""FILE_CHUNK_RECORDS on the real broker: a spooled file in chunks, each once with its
chunk headers; a kill between chunks, then another pod resumes at the next chunk and
writes no committed chunk again; a file changed between chunks is dead-lettered
``file_changed``; off by default, no progress topic.

Files of a few MiB, spooled past a 1 MiB threshold."""

from __future__ import annotations

import json

from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.harness import (
    Route,
    assert_exactly_once,
    by_source,
    create_topics,
    encode,
    lag,
    left_open,
    make_items,
    produce,
    read_all,
    service_env,
    wait_committed,
    wait_until,
)
from tools.kafka_io import end_offsets, unique

MIB = 1024 * 1024
ITEMS = 24_000  # about 3.4 MiB of NDJSON


def chunked_env(bootstrap, topics, tmp_path, chunk: int | None, **extra):
    chunking = {"FILE_CHUNK_RECORDS": str(chunk), "PROGRESS_TOPIC": unique("progress"),
                "DEDUP_REPLICATION_FACTOR": "1"} if chunk else {}
    return service_env(bootstrap, topics, SPOOL_DIR=str(tmp_path / "spool"),
                       SPOOL_THRESHOLD_BYTES=str(MIB), SESSION_TIMEOUT_MS="6000",
                       **chunking, **extra)


def serve(file_server, name: str, count: int) -> tuple[str, list[bytes], Route]:
    items = make_items(name, count)
    route = Route(encode(items, "ndjson")[0])
    return file_server.add(f"{name}.ndjson", route), items, route


def assert_chunk_headers(outputs: list, url: str, size: int, chunks: int) -> None:
    """Every output of ``url`` names its chunk (index // size) and the file's chunks."""
    for record in by_source(outputs)[url]:
        headers = dict(record.headers)
        assert int(headers["chunk"]) == int(headers["index"]) // size, headers
        assert int(headers["chunks"]) == chunks, headers


async def progress_end(bootstrap, env, isolation="read_committed") -> int:
    return sum((await end_offsets(bootstrap, env["PROGRESS_TOPIC"], isolation)).values())


async def a_chunk_committed(bootstrap, env, services):
    """A started service, once a chunk of its file committed."""
    service = services(env).start()

    async def committed() -> bool:
        return await progress_end(bootstrap, env) > 0
    await wait_until(committed, 90, "a chunk's resume point", every=0.02)
    return service


async def kill_between_chunks(bootstrap, topics, env, services) -> None:
    """Start the service, and kill -9 it once a chunk committed, before the file did."""
    (await a_chunk_committed(bootstrap, env, services)).kill()
    assert await lag(bootstrap, topics) == 1, "killed before the file's last chunk"


async def test_a_chunked_file_commits_each_record_once_with_its_chunk_headers(
        kafka_bootstrap, file_server, services, tmp_path):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="chunks")
    url, items, _ = serve(file_server, "big", ITEMS)
    small, small_items, _ = serve(file_server, "small", 50)
    await produce(kafka_bootstrap, topics.input, [url.encode(), small.encode()], 1)
    env = chunked_env(kafka_bootstrap, topics, tmp_path, chunk=5000)
    service = services(env).start()

    await wait_committed(kafka_bootstrap, topics, 120)
    assert await service.stop() == 0
    outputs = await read_all(kafka_bootstrap, topics.output)
    assert_exactly_once(outputs, {url: items, small: small_items})
    assert_chunk_headers(outputs, url, 5000, 5)
    assert all("chunk" not in dict(r.headers) for r in by_source(outputs)[small]), \
        "a file in memory is not chunked"
    points = await read_all(kafka_bootstrap, env["PROGRESS_TOPIC"])
    assert [json.loads(p.value)["done"] for p in points[:-1]] == [5000, 10000, 15000, 20000]
    assert points[-1].value is None, "the last chunk tombstones the resume point"
    assert await read_all(kafka_bootstrap, topics.dlq) == []


async def test_a_kill_between_chunks_resumes_at_the_next_chunk_on_another_pod(
        kafka_bootstrap, file_server, services, tmp_path):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="chunkkill")
    url, items, _ = serve(file_server, "kill", ITEMS)
    await produce(kafka_bootstrap, topics.input, [url.encode()], 1)
    env = chunked_env(kafka_bootstrap, topics, tmp_path, chunk=100)
    await kill_between_chunks(kafka_bootstrap, topics, env, services)

    restarted = services(env, name="pod-1").start()
    await wait_committed(kafka_bootstrap, topics, 120)
    assert await restarted.stop() == 0
    outputs = await read_all(kafka_bootstrap, topics.output)
    assert_exactly_once(outputs, {url: items})
    assert_chunk_headers(outputs, url, 100, ITEMS // 100)
    (resumed,) = restarted.events("chunks_resumed")
    assert 0 < resumed["chunk"] < ITEMS // 100 and resumed["done"] == 100 * resumed["chunk"]
    assert (await read_all(kafka_bootstrap, env["PROGRESS_TOPIC"]))[-1].value is None


async def test_a_resume_point_behind_a_transaction_left_open_is_read(
        kafka_bootstrap, file_server, services, tmp_path):
    """Resume points are read to the high watermark: one committed behind a transaction
    that a replica gone from the group left open is found (the holder fenced), not
    missed at the last stable offset and its chunks written again."""
    topics = await create_topics(kafka_bootstrap, partitions=1, name="chunkopen")
    url, items, _ = serve(file_server, "open", ITEMS)
    await produce(kafka_bootstrap, topics.input, [url.encode()], 1)
    env = chunked_env(kafka_bootstrap, topics, tmp_path, chunk=100)
    service = await a_chunk_committed(kafka_bootstrap, env, services)
    holder = f"{topics.group}-gone-7"
    async with left_open(kafka_bootstrap, holder, env["PROGRESS_TOPIC"], 120_000):
        opened = await progress_end(kafka_bootstrap, env, "read_uncommitted")

        async def committed_behind() -> bool:  # a chunk's point and its commit marker
            return await progress_end(kafka_bootstrap, env, "read_uncommitted") > opened + 1
        await wait_until(committed_behind, 60, "a chunk committed behind the open one",
                         every=0.02)
        service.kill()
        assert await lag(kafka_bootstrap, topics) == 1, "killed before the file's last chunk"
        restarted = services(env, name="pod-1").start()
        await wait_committed(kafka_bootstrap, topics, 120)
        assert await restarted.stop() == 0
    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), {url: items})
    assert [e["chunk"] > 0 for e in restarted.events("chunks_resumed")] == [True]
    assert holder in [e["transactional_id"] for e in restarted.events("zombie_fenced")]


async def test_a_stop_ends_at_a_chunk_s_end_and_the_restart_goes_on_from_there(
        kafka_bootstrap, file_server, services, tmp_path):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="chunkstop")
    url, items, _ = serve(file_server, "stop", ITEMS)
    await produce(kafka_bootstrap, topics.input, [url.encode()], 1)
    env = chunked_env(kafka_bootstrap, topics, tmp_path, chunk=100)
    service = await a_chunk_committed(kafka_bootstrap, env, services)
    assert await service.stop() == 0
    assert await lag(kafka_bootstrap, topics) == 1, "stopped at a chunk's end, not the file's"
    done = len(await read_all(kafka_bootstrap, topics.output))
    assert 0 < done < ITEMS and done % 100 == 0, done

    service.start()
    await wait_committed(kafka_bootstrap, topics, 120)
    assert await service.stop() == 0
    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), {url: items})


async def test_a_file_changed_between_chunks_is_dead_lettered_naming_its_chunks(
        kafka_bootstrap, file_server, services, tmp_path):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="chunkchg")
    url, items, route = serve(file_server, "changed", ITEMS)
    await produce(kafka_bootstrap, topics.input, [url.encode()], 1)
    env = chunked_env(kafka_bootstrap, topics, tmp_path, chunk=100)
    await kill_between_chunks(kafka_bootstrap, topics, env, services)
    route.body = encode(make_items("other", ITEMS), "ndjson")[0]

    restarted = services(env, name="pod-1").start()
    await wait_committed(kafka_bootstrap, topics, 120)
    assert await restarted.stop() == 0
    (letter,) = [json.loads(d.value) for d in await read_all(kafka_bootstrap, topics.dlq)]
    assert letter["reason"] == "file_changed" and letter["url"] == url, letter
    outputs = await read_all(kafka_bootstrap, topics.output)
    done = len(outputs)
    assert 0 < done < ITEMS and done % 100 == 0
    assert_exactly_once(outputs, {url: items[:done]})
    assert f"chunks 0-{done // 100 - 1} (transactions 0-{done - 1} of {ITEMS})" \
        in letter["error"], letter["error"]
    assert (await read_all(kafka_bootstrap, env["PROGRESS_TOPIC"]))[-1].value is None


async def test_chunks_are_off_by_default_and_no_progress_topic_is_made(
        kafka_bootstrap, file_server, services, tmp_path):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="chunkoff")
    url, items, route = serve(file_server, "whole", ITEMS)
    assert len(route.body) > MIB, "big enough to be spooled"
    await produce(kafka_bootstrap, topics.input, [url.encode()], 1)
    service = services(chunked_env(kafka_bootstrap, topics, tmp_path, chunk=None)).start()

    await wait_committed(kafka_bootstrap, topics, 120)
    assert await service.stop() == 0
    outputs = await read_all(kafka_bootstrap, topics.output)
    assert_exactly_once(outputs, {url: items})
    assert all("chunk" not in dict(r.headers) for r in outputs)
    assert not service.events("resume_points_read")
    assert f"{topics.group}-progress" not in await topic_names(kafka_bootstrap)


async def topic_names(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_a_repeated_file_under_dedup_content_is_not_written_again_in_chunks(
        kafka_bootstrap, file_server, services, tmp_path):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="chunkdup")
    url, items, _ = serve(file_server, "twice", ITEMS)
    await produce(kafka_bootstrap, topics.input, [url.encode(), url.encode()], 1)
    env = chunked_env(kafka_bootstrap, topics, tmp_path, chunk=5000, DEDUP="content",
                      DEDUP_TOPIC=unique("dedup"))
    service = services(env).start()

    await wait_committed(kafka_bootstrap, topics, 120)
    assert await service.stop() == 0
    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), {url: items})
    assert [e["original_offset"] for e in service.events("duplicate")] == [0]
