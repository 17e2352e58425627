"""Start-up with Kafka down: wait for it, log why, stop cleanly on SIGTERM."""

from __future__ import annotations

import gc
import logging

from aiokafka import errors as kafka_errors

from app import __main__ as app_main
from app import service as service_module
from app.config import load_settings
from app.kafka.protocol.negotiate import TransactionProtocol
from tools.local_kafka import free_port
from tools.proc import app_process


async def test_unreachable_kafka_is_waited_for_until_sigterm(tmp_path):
    port = free_port()  # nothing listens there
    env = {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "HTTP_PORT": "0",
           "LOG_FORMAT": "json"}
    service = app_process(env, tmp_path, "startup").start()
    try:
        # A broker that is down (restarting, say) is waited for, not a crash.
        waiting = await service.wait_event("waiting_for_kafka", 60)
        assert waiting is not None, service.log_text()[-2000:]
        assert f"127.0.0.1:{port}" in waiting["msg"], "the line names where it waits"
        assert await service.stop(60) == 0
    finally:
        service.kill()
    assert service.events("stopped")[-1]["committed"] == 0
    assert "Traceback" not in service.log_text()


class FlakyConsumer:
    """Fails start() with the scripted errors, in turn, then starts."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.stops = 0

    def subscribe(self, topics, listener=None) -> None:
        pass

    async def start(self) -> None:
        if self.errors:
            raise self.errors.pop(0)

    async def stop(self) -> None:
        self.stops += 1


async def legacy_cluster(settings):
    """What negotiation finds on a cluster without KIP-447 (no broker in these tests)."""
    return TransactionProtocol.LEGACY, "legacy"


async def test_a_group_error_at_start_is_waited_out(monkeypatch, caplog):
    # Seen while a restarted broker's group coordinator was still loading: SyncGroup
    # answered UnknownError and consumer.start() raised it.
    made: list[FlakyConsumer] = []

    def make(settings):
        made.append(FlakyConsumer([kafka_errors.UnknownError()] if not made else []))
        return made[-1]

    monkeypatch.setattr(service_module, "make_consumer", make)
    monkeypatch.setattr(service_module, "transaction_protocol", legacy_cluster)
    service = service_module.Service(load_settings([], {}))
    with caplog.at_level(logging.WARNING, logger="app.service"):
        started = await service._connect(downloader=None)  # type: ignore[arg-type]
    assert started is not None and started[0] is made[1]
    assert made[0].stops == 1
    waits = [r for r in caplog.records if getattr(r, "event", None) == "waiting_for_kafka"]
    assert len(waits) == 1 and "UnknownError" in waits[0].getMessage()


async def test_an_authorization_error_at_start_is_not_retried(monkeypatch):
    consumer = FlakyConsumer([kafka_errors.GroupAuthorizationFailedError()])
    monkeypatch.setattr(service_module, "make_consumer", lambda settings: consumer)
    monkeypatch.setattr(service_module, "transaction_protocol", legacy_cluster)
    service = service_module.Service(load_settings([], {}))
    try:
        await service._connect(downloader=None)  # type: ignore[arg-type]
    except kafka_errors.GroupAuthorizationFailedError:
        pass
    else:
        raise AssertionError("an authorization error must stop the start")
    assert consumer.stops == 1


def test_the_service_tunes_the_collector_at_start() -> None:
    before = gc.get_threshold()
    try:
        app_main.tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] >= 10_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
