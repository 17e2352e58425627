"""Start-up with Kafka down: wait for it, log why, stop cleanly on SIGTERM."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import subprocess
import sys

from aiokafka import errors as kafka_errors

from app import __main__ as app_main
from app import service as service_module
from app.config import load_settings


def test_unreachable_kafka_is_waited_for_until_sigterm():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "HTTP_PORT": "0",
           "LOG_FORMAT": "text"}
    proc = subprocess.Popen([sys.executable, "-m", "app"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        # A broker that is down (restarting, say) is waited for, not a crash.
        for line in proc.stdout:
            if f"waiting for Kafka at 127.0.0.1:{port}" in line:
                break
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "stopped: records committed=0" in rest
    assert "Traceback" not in rest


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


async def test_a_group_error_at_start_is_waited_out(monkeypatch, caplog):
    # Seen while a restarted broker's group coordinator was still loading: SyncGroup
    # answered UnknownError and consumer.start() raised it.
    made: list[FlakyConsumer] = []

    def make(settings):
        made.append(FlakyConsumer([kafka_errors.UnknownError()] if not made else []))
        return made[-1]

    monkeypatch.setattr(service_module, "make_consumer", make)
    service = service_module.Service(load_settings([], {}))
    with caplog.at_level(logging.WARNING, logger="app.service"):
        started = await service._connect(downloader=None)  # type: ignore[arg-type]
    assert started is not None and started[0] is made[1]
    assert made[0].stops == 1
    assert "waiting for Kafka" in caplog.text and "UnknownError" in caplog.text


async def test_an_authorization_error_at_start_is_not_retried(monkeypatch):
    consumer = FlakyConsumer([kafka_errors.GroupAuthorizationFailedError()])
    monkeypatch.setattr(service_module, "make_consumer", lambda settings: consumer)
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
