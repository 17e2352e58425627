"""The dashboard and the alert rules (deploy/observability) use only metrics that a
real ``python -m app`` exports on /metrics, read live here against the real broker,
and the dashboard shows every metric family the service exports.
"""

from __future__ import annotations

import re

from tests.integration.harness import (
    Route,
    create_topics,
    encode,
    http_get,
    lag,
    make_items,
    produce,
    service_env,
    unique,
    wait_ready,
    wait_until,
)
from tests.observability.queries import (
    EXTERNAL_METRICS,
    dashboard_queries,
    exported_names,
    metric_names,
    used_metric_names,
)
from tools.local_kafka import free_port

# What Prometheus appends to a family's name in exposition.
SERIES_SUFFIXES = re.compile(r"_(total|created|bucket|sum|count)$")


async def test_dashboard_and_rules_use_only_exported_metrics(kafka_bootstrap, file_server,
                                                             services):
    topics = await create_topics(kafka_bootstrap, partitions=2, name="observability")
    port = free_port()
    # DEDUP on, so the dedup store's series exist too (a restore sets its entries gauge).
    service = services(service_env(kafka_bootstrap, topics, HTTP_PORT=str(port), DEDUP="url",
                                   DEDUP_TOPIC=unique("obs-dedup"))).start()

    await wait_ready(port)

    # One record of each kind, so every labelled series exists: committed, retried
    # (first answer 503), dead-lettered (404).
    body = encode(make_items("obs", 3), "ndjson")[0]
    urls = [file_server.add("obs/good", Route(body)),
            file_server.add("obs/flaky", Route(body, fail_first=1)),
            file_server.add("obs/missing", Route(b"", status=404))]
    await produce(kafka_bootstrap, topics.input, [u.encode() for u in urls], 2)

    async def drained() -> bool:
        return await lag(kafka_bootstrap, topics) == 0
    await wait_until(drained, 60, "all input committed")
    exposition = ""

    async def lag_observed() -> bool:
        # The lag gauges are refreshed about once a second from the poll loop.
        nonlocal exposition
        status, exposition = await http_get(port, "/metrics")
        return status == 200 and "txingest_consumer_lag{" in exposition
    await wait_until(lag_observed, 30, "the per-partition lag on /metrics")
    assert await service.stop(timeout=30) == 0
    # The 404 counted under its reason, through the real service and broker.
    assert 'txingest_dead_letters_total{reason="http_error"} 1.0' in exposition

    exported = exported_names(exposition)
    used = used_metric_names()
    ours = {name: where for name, where in used.items() if name.startswith("txingest_")}
    missing = {name: sorted(where) for name, where in ours.items() if name not in exported}
    assert not missing, f"used but not exported by the service: {missing}"
    others = used.keys() - ours.keys()
    unknown = others - EXTERNAL_METRICS
    assert not unknown, f"neither the service's metrics nor known external ones: {unknown}"

    shown = {SERIES_SUFFIXES.sub("", name) for _, expr in dashboard_queries()
             for name in metric_names(expr)}
    families = {SERIES_SUFFIXES.sub("", name) for name in exported}
    assert families <= shown, f"exported, not on the dashboard: {sorted(families - shown)}"
