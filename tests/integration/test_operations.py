"""Running it like production: probes, metrics, clean SIGTERM, JSON logs (real broker)."""

from __future__ import annotations

import json

from tests.integration.harness import (
    Route,
    assert_exactly_once,
    create_topics,
    encode,
    http_get,
    lag,
    make_items,
    produce,
    read_all,
    service_env,
    wait_ready,
    wait_until,
)
from tests.integration.harness import (
    metric as harness_metric,
)
from tools.kafka_io import end_offsets
from tools.local_kafka import free_port


def metric(text: str, name: str) -> float:
    value = harness_metric(text, name)
    assert value is not None, f"{name} not in /metrics"
    return value


async def test_probes_metrics_sigterm_and_json_logs(kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=2, name="ops")
    port = free_port()
    service = services(service_env(kafka_bootstrap, topics, HTTP_PORT=str(port),
                                   LOG_FORMAT="json")).start()

    await wait_ready(port)
    assert (await http_get(port, "/healthz"))[0] == 200
    _, before = await http_get(port, "/metrics")
    assert metric(before, 'txingest_records_total{outcome="committed"}') == 0
    assert metric(before, "txingest_assigned_partitions") == 2

    expected = {}
    for n in range(12):
        items = make_items(f"ops{n}", 1 + n % 4)
        expected[file_server.add(f"ops/{n}", Route(encode(items, "ndjson")[0]))] = items
    await produce(kafka_bootstrap, topics.input, [u.encode() for u in expected], 2)

    async def drained() -> bool:
        return await lag(kafka_bootstrap, topics) == 0
    await wait_until(drained, 60, "all input committed")
    _, after = await http_get(port, "/metrics")
    assert metric(after, 'txingest_records_total{outcome="committed"}') == 12
    assert metric(after, "txingest_output_records_total") == sum(map(len, expected.values()))
    assert metric(after, 'txingest_transactions_total{result="committed"}') == 12
    assert metric(after, "txingest_download_seconds_count") == 12
    assert metric(after, "txingest_download_bytes_total") > 0
    assert metric(after, "txingest_commit_seconds_count") == 12

    assert await service.stop(timeout=30) == 0
    await assert_no_open_transaction(kafka_bootstrap, topics.output)
    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), expected)
    lines = service.log_text().splitlines()
    assert lines, "the service logged nothing"
    for line in lines:
        assert isinstance(json.loads(line), dict), line
    assert service.events("stopped")[-1]["committed"] == 12


async def assert_no_open_transaction(bootstrap: str, topic: str) -> None:
    """The last stable offset equals the high watermark: nothing left hanging."""
    committed = await end_offsets(bootstrap, topic, "read_committed")
    written = await end_offsets(bootstrap, topic, "read_uncommitted")
    assert committed == written, (committed, written)
