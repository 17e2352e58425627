"""Dead letters that could not fit the broker's limit, on the real broker: a huge input URL
among ordinary files, and an input whose dead letter would have outgrown the record size.
Before the fix each wedged its partition (the dead letter refused, the transaction
aborted and retried for ever); now each is dead-lettered once and everything else commits.
"""

from __future__ import annotations

import orjson

from tests.integration.harness import (
    Route,
    assert_exactly_once,
    create_topics,
    make_items,
    produce,
    read_all,
    service_env,
    wait_committed,
)
from tests.integration.test_faults import load_files
from tests.integration.test_redrive import redrive, redrive_env
from tools.kafka_io import offered_protocol

MAX_RECORD_BYTES = 1_000_000  # the service's default


async def test_a_huge_url_among_ordinary_files_is_dead_lettered_once(
        kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=2, name="hugeurl")
    expected = await load_files(kafka_bootstrap, file_server, topics, 60, name="ok")
    huge = file_server.url("huge/" + "a" * 600_000)  # 600 KB, as measured
    await produce(kafka_bootstrap, topics.input, [huge.encode()], 1)  # partition 0, offset 30
    service = services(service_env(kafka_bootstrap, topics)).start()

    await wait_committed(kafka_bootstrap, topics, 90)
    assert await service.stop() == 0

    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), expected)
    dead = await read_all(kafka_bootstrap, topics.dlq)
    assert len(dead) == 1, [d.value[:200] for d in dead]
    letter = orjson.loads(dead[0].value)
    assert letter["reason"] == "url_too_long"
    assert letter["source"] == {"topic": topics.input, "partition": 0, "offset": 30}
    assert letter["input"] == {"omitted": len(huge)} and letter["url"] is None
    assert len(dead[0].value) < 2000, "the URL is not copied into its dead letter"


async def test_a_dead_letter_over_the_record_limit_is_cut_to_fit_and_not_redriven(
        kafka_bootstrap, file_server, services):
    """A 700 KB key and 64 KiB of control characters (each escaped to six bytes in JSON):
    copied whole, the dead letter would be 1.1 MB, over the broker's 1 MiB limit."""
    topics = await create_topics(kafka_bootstrap, partitions=1, name="cutletter")
    items = make_items("after", 3)
    after = file_server.add("after.ndjson", Route(b"\n".join(items)))
    key, value = b"k" * 700_000, b"\x01" * (64 * 1024)
    await produce(kafka_bootstrap, topics.input, [value, after.encode()], 1,
                  keys=[key, b"after"])
    service = services(service_env(kafka_bootstrap, topics)).start()

    await wait_committed(kafka_bootstrap, topics, 90)
    assert await service.stop() == 0

    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), {after: items})
    dead = await read_all(kafka_bootstrap, topics.dlq)
    assert len(dead) == 1
    record = dead[0]
    letter = orjson.loads(record.value)
    assert letter["reason"] == "invalid_input_record" and record.key == key
    assert letter["input"] == {"omitted": len(value)}
    assert letter["truncated"] == {"input": len(value)}
    size = len(record.key) + len(record.value) + sum(len(k) + len(v) for k, v in record.headers)
    assert size <= MAX_RECORD_BYTES

    result = await redrive(redrive_env(kafka_bootstrap, topics))
    assert result.code == 0, result.err
    assert "cannot re-drive 1" in result.summary and "moved 0" in result.summary


async def test_a_dead_letter_fits_a_dlq_topic_sized_like_max_record_bytes(
        kafka_bootstrap, file_server, services):
    """The broker itself would refuse the whole dead letter (60 KB of input copied into it,
    the DLQ topic takes 20,000 bytes): before the fix the transaction aborted, the retry
    failed with OutOfOrderSequenceNumber and the task restarted, again and again."""
    limit = 20_000
    topics = await create_topics(kafka_bootstrap, partitions=1, name="smalldlq",
                                 dlq_config={"max.message.bytes": str(limit)})
    items = make_items("after", 3)
    after = file_server.add("after.ndjson", Route(b"\n".join(items)))
    value = b"not a url " * 6000
    await produce(kafka_bootstrap, topics.input, [value, after.encode()], 1)
    service = services(service_env(kafka_bootstrap, topics,
                                   MAX_RECORD_BYTES=str(limit))).start()

    await wait_committed(kafka_bootstrap, topics, 90)
    assert await service.stop() == 0

    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), {after: items})
    dead = await read_all(kafka_bootstrap, topics.dlq)
    assert len(dead) == 1
    letter = orjson.loads(dead[0].value)
    assert letter["reason"] == "invalid_input_record"
    assert letter["truncated"] == {"input": len(value)}
    assert not service.events("task_failed"), "no refused send, no new producer"


async def test_after_the_broker_refuses_an_output_record_the_partition_goes_on(
        kafka_bootstrap, file_server, services):
    """The follow-on of a refused batch. Under the older protocol aiokafka does not roll
    back its sequence number, so the next send to that output partition fails with
    OutOfOrderSequenceNumber; the task ends and a new producer resumes from the committed
    offset (docs/design.md). Under transactions v2 the abort starts a new epoch with
    fresh sequence numbers: the same producer goes on."""
    topics = await create_topics(kafka_bootstrap, partitions=1, name="refused",
                                 output_config={"max.message.bytes": "2000"})
    huge = b'{"id":"huge","blob":"' + b"x" * 5000 + b'"}'
    mixed = file_server.add("mixed", Route(b"\n".join(make_items("small", 3) + [huge])))
    after = {file_server.add(f"after/{n}", Route(b"\n".join(make_items(f"after{n}", 2)))):
             make_items(f"after{n}", 2) for n in range(3)}
    await produce(kafka_bootstrap, topics.input, [mixed.encode(), *map(str.encode, after)], 1)
    service = services(service_env(kafka_bootstrap, topics)).start()

    await wait_committed(kafka_bootstrap, topics, 90)
    assert await service.stop() == 0

    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), after)
    dead = await read_all(kafka_bootstrap, topics.dlq)
    assert [orjson.loads(d.value)["reason"] for d in dead] == ["record_too_large"]
    failed = service.events("task_failed")
    if await offered_protocol(kafka_bootstrap) == "v2":
        assert not failed, failed
    else:
        assert failed and "OutOfOrderSequenceNumber" in failed[0]["msg"], failed
