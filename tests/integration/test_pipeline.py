"""End to end against the real broker and real HTTP: outputs, headers, dead letters."""

from __future__ import annotations

import gzip

import orjson
from aiokafka.partitioner import murmur2

from tests.integration.harness import (
    Route,
    assert_exactly_once,
    by_source,
    create_topics,
    encode,
    lag,
    make_items,
    produce,
    read_all,
    service_env,
    wait_until,
)

FORMATS = ["ndjson", "array", "gzip-file", "gzip-encoding"]


def input_value(url: str, form: int) -> bytes:
    """The three accepted spellings of an input record."""
    if form == 1:
        return orjson.dumps(url)
    if form == 2:
        return orjson.dumps({"url": url, "note": "extra fields are ignored"})
    return url.encode()


async def test_every_transaction_once_exact_with_headers(kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=4, name="e2e")
    expected: dict[str, list[bytes]] = {}
    values = []
    for n in range(40):
        items = make_items(f"f{n}", 1 + n % 9)
        body, headers = encode(items, FORMATS[n % 4])
        url = file_server.add(f"files/f{n}", Route(body, headers=headers))
        expected[url] = items
        values.append(input_value(url, n % 3))
    await produce(kafka_bootstrap, topics.input, values, topics.partitions)

    service = services(service_env(kafka_bootstrap, topics)).start()
    await wait_until(lambda: _done(kafka_bootstrap, topics), 90, "all input committed")
    assert await service.stop() == 0

    outputs = await read_all(kafka_bootstrap, topics.output)
    assert_exactly_once(outputs, expected)
    for url, records in by_source(outputs).items():
        assert len({r.partition for r in records}) == 1, "a file's transactions share a key"
        # Where every Kafka client's default partitioner puts this key.
        assert records[0].partition == (murmur2(url.encode()) & 0x7FFFFFFF) % topics.partitions
        for index, record in enumerate(records):
            headers = dict(record.headers)
            assert record.key == url.encode()
            assert headers["source-topic"] == topics.input.encode()
            assert int(headers["source-partition"]) in range(topics.partitions)
            assert int(headers["source-offset"]) >= 0
            assert headers["index"] == str(index).encode()
            assert headers["count"] == str(len(expected[url])).encode()
    assert await read_all(kafka_bootstrap, topics.dlq) == []
    stopped = service.events("stopped")[-1]
    assert (stopped["committed"], stopped["dead_lettered"]) == (40, 0)


async def test_bad_input_dead_lettered_and_good_input_still_flows(
        kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="dlq")
    good = make_items("good", 3)
    flaky = file_server.add("flaky", Route(encode(good, "ndjson")[0], fail_first=2))
    cases = [  # (input value, expected DLQ reason or None for success)
        (flaky.encode(), None),
        (file_server.add("missing", Route(b"gone", status=404)).encode() + b"?sig=SECRET-123",
         "http_error"),
        (file_server.add("always-503", Route(b"", fail_first=99)).encode(), "http_transient"),
        (file_server.add("bad-json", Route(b'{"a": 1}\n{"a": ')).encode(), "invalid_json"),
        (file_server.add("not-object", Route(b"[1, 2]")).encode(), "not_an_object"),
        (file_server.add("bad-gzip", Route(gzip.compress(b'{"a":1}\n')[:-9])).encode(),
         "bad_gzip"),
        (b"this is not a url", "invalid_input_record"),
        (b"", "invalid_input_record"),
        (file_server.add("empty", Route(b"")).encode(), None),
        (file_server.add("empty-array", Route(b"[]")).encode(), None),
        (file_server.add("after", Route(encode(make_items("after", 2), "array")[0])).encode(),
         None),
    ]
    await produce(kafka_bootstrap, topics.input, [value for value, _ in cases], 1)
    service = services(service_env(kafka_bootstrap, topics, MAX_ATTEMPTS="3")).start()
    await wait_until(lambda: _done(kafka_bootstrap, topics), 90, "all input committed")
    assert await service.stop() == 0

    outputs = await read_all(kafka_bootstrap, topics.output)
    assert_exactly_once(outputs, {flaky: good, file_server.url("after"): make_items("after", 2)})
    assert file_server.routes["flaky"].requests == 3, "two 503s, then success"
    assert file_server.routes["always-503"].requests == 3, "MAX_ATTEMPTS bounds the retries"

    dead = await read_all(kafka_bootstrap, topics.dlq)
    want = [(offset, reason) for offset, (_, reason) in enumerate(cases) if reason]
    got = [(r.offset_in_source, r.reason) for r in map(_DeadLetter, dead)]
    assert sorted(got) == want, "exactly one dead letter per bad record, with its reason"
    for letter in map(_DeadLetter, dead):
        assert letter.value["source"] == {"topic": topics.input, "partition": 0,
                                          "offset": letter.offset_in_source}
        assert letter.value["error"]
        assert letter.headers["source-offset"] == str(letter.offset_in_source).encode()
    assert "SECRET-123" not in service.log_text(), "signed URLs' query strings stay out of logs"
    always = next(d for d in map(_DeadLetter, dead) if d.reason == "http_transient")
    assert always.value["attempts"] == 3


class _DeadLetter:
    def __init__(self, record) -> None:
        self.value = orjson.loads(record.value)
        self.headers = dict(record.headers)
        self.reason = self.value["reason"]
        self.offset_in_source = self.value["source"]["offset"]


async def _done(bootstrap, topics) -> bool:
    return await lag(bootstrap, topics) == 0


async def _run_slow_files(kafka_bootstrap, file_server, services, name: str, count: int,
                          input_partitions: int, **env: str):
    """Files that each take 0.2 s to serve, run through the service to the end."""
    topics = await create_topics(kafka_bootstrap, partitions=4, name=name)
    expected = {}
    for n in range(count):
        items = make_items(f"{name}{n}", 2)
        expected[file_server.add(f"{name}/{n}", Route(encode(items, "ndjson")[0], delay=0.2))] = (
            items)
    await produce(kafka_bootstrap, topics.input, [u.encode() for u in expected], input_partitions)
    service = services(service_env(kafka_bootstrap, topics, **env)).start()
    await wait_until(lambda: _done(kafka_bootstrap, topics), 90, "all input committed")
    assert await service.stop() == 0
    outputs = await read_all(kafka_bootstrap, topics.output)
    assert_exactly_once(outputs, expected)
    return topics, outputs


async def test_downloads_overlap_within_limits_while_commits_stay_in_order(
        kafka_bootstrap, file_server, services):
    topics, outputs = await _run_slow_files(
        kafka_bootstrap, file_server, services, "window", 60, input_partitions=1,
        PREFETCH_PER_PARTITION="3", MAX_CONCURRENT_DOWNLOADS="16")
    # One input partition: only its prefetch window bounds the overlap.
    assert file_server.max_inflight == 3
    # Transactions run one after another, so in every output partition the log
    # order is the commit order: input offsets must never go backwards.
    for partition in range(topics.partitions):
        offsets = [int(dict(r.headers)["source-offset"]) for r in outputs
                   if r.partition == partition]
        assert offsets == sorted(offsets), "a later input record committed before an earlier one"


async def test_global_download_limit_caps_all_partitions(kafka_bootstrap, file_server, services):
    await _run_slow_files(kafka_bootstrap, file_server, services, "global", 40,
                          input_partitions=4, PREFETCH_PER_PARTITION="8",
                          MAX_CONCURRENT_DOWNLOADS="5")
    assert file_server.max_inflight == 5
