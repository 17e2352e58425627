"""The probe endpoints over real HTTP, driven by a real Service's state."""

from __future__ import annotations

import time

from aiohttp.test_utils import TestClient, TestServer

from app.config import load_settings
from app.ops import web
from app.ops.stats import Stats
from app.service import Service
from app.task.context import TaskContext
from app.task.supervisor import Supervisor


def joined_service() -> Service:
    settings = load_settings(["--health-stall-s", "5"], {})
    service = Service(settings)
    supervisor = Supervisor(TaskContext(settings, None, None, service.stats,  # type: ignore[arg-type]
                                        None, None))  # type: ignore[arg-type]
    supervisor.assign([])  # joined the group with nothing assigned
    service.supervisor = supervisor
    return service


async def fetch(service: Service, path: str) -> tuple[int, str]:
    async with TestClient(TestServer(web.make_app(service))) as client:
        response = await client.get(path)
        return response.status, await response.text()


async def test_ready_after_join_and_not_during_shutdown():
    service = Service(load_settings([], {}))
    assert (await fetch(service, "/readyz"))[0] == 503, "not ready before the group join"
    service = joined_service()
    assert await fetch(service, "/readyz") == (200, "ready\n")
    service.stopping.set()
    assert await fetch(service, "/readyz") == (503, "not ready\n")


async def test_health_holds_while_waiting_for_kafka_at_start():
    service = Service(load_settings(["--health-stall-s", "5"], {}))
    service.last_progress = time.monotonic() - 600  # no poll loop yet: Kafka is down
    assert await fetch(service, "/healthz") == (200, "ok: waiting for Kafka\n")


async def test_health_fails_when_the_poll_loop_stalls():
    service = joined_service()
    service.polling = True
    assert (await fetch(service, "/healthz"))[0] == 200
    service.last_progress = time.monotonic() - 6
    status, text = await fetch(service, "/healthz")
    assert status == 503 and "stalled" in text


async def test_metrics_are_prometheus_text_with_bounded_labels():
    service = joined_service()
    service.stats.committed(outputs=3)
    service.stats.retried("http_transient")
    status, text = await fetch(service, "/metrics")
    assert status == 200
    assert 'txingest_records_total{outcome="committed"} 1.0' in text
    assert "txingest_output_records_total 3.0" in text
    assert 'txingest_retries_total{reason="http_transient"} 1.0' in text
    assert 'txingest_records_total{outcome="dead_lettered"} 0.0' in text


def test_two_stats_do_not_share_a_registry():
    a, b = Stats(), Stats()
    a.committed(outputs=1)
    assert b.totals["committed"] == 0
    assert b"txingest_output_records_total 0.0" in b.exposition()
