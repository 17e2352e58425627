"""Downloads cut off half-way, through the service and the real broker: each file is
committed once with every transaction exact, whether its download resumed with a Range
request (plain or gzip), started over (a whole file in answer, or a changed one) or was
tried again (no ranges offered); each resumption logged and counted."""

from __future__ import annotations

from tests.integration.harness import (
    assert_exactly_once,
    create_topics,
    encode,
    make_items,
    produce,
    read_all,
    sampled,
    service_env,
    wait_committed,
)
from tools.local_kafka import free_port
from tools.ranges import RangedFile

ITEMS = 3000  # about 400 kB a file: cut off well inside the body


async def test_files_cut_off_half_way_are_committed_once(kafka_bootstrap, file_server,
                                                         services):
    topics = await create_topics(kafka_bootstrap, partitions=2, name="resume")
    expected, halves = {}, {}  # by URL: the transactions, half its body's bytes
    for name, fmt, how in [("plain", "ndjson", dict(cut="close")),
                           ("gzip", "gzip-encoding", dict(cut="reset")),
                           ("gzfile", "gzip-file", dict(cut="stall")),
                           ("ignored", "ndjson", dict(ranges="ignored")),
                           ("unranged", "array", dict(ranges="none"))]:
        items = make_items(name, ITEMS)
        body, headers = encode(items, fmt)
        url = file_server.serve(f"resume/{name}", RangedFile([body], headers=headers, **how))
        expected[url], halves[url] = items, len(body) // 2
    old, new = encode(make_items("old", ITEMS), "ndjson")[0], make_items("new", ITEMS + 1)
    changed = file_server.serve("resume/changed", RangedFile([old, encode(new, "ndjson")[0]]))
    expected[changed], halves[changed] = new, len(old) // 2
    await produce(kafka_bootstrap, topics.input, [u.encode() for u in expected], 2)
    port = free_port()
    service = services(service_env(kafka_bootstrap, topics, HTTP_PORT=str(port),
                                   DOWNLOAD_READ_TIMEOUT_S="1")).start()
    await wait_committed(kafka_bootstrap, topics)
    counted = await sampled(port, "txingest_download_resumes_total")
    retried = await sampled(port, "txingest_retries_total", reason="truncated_body")
    assert await service.stop() == 0

    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), expected)
    assert await read_all(kafka_bootstrap, topics.dlq) == []
    kept = {line["url"]: line["bytes_kept"] for line in service.events("download_resumed")}
    unranged, reset = file_server.url("resume/unranged"), file_server.url("resume/gzip")
    assert kept.keys() == expected.keys() - {unranged}
    assert (counted, retried) == (len(kept), 1)  # the file without ranges: tried again
    # Each resumed from where it was cut; a reset may lose what the client had not read.
    assert {url: kept[url] for url in kept if url != reset} == {
        url: halves[url] for url in kept if url != reset}
    assert 0 <= kept[reset] <= halves[reset]
