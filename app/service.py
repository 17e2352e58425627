"""The service: one consumer polling for every partition, a supervisor owning tasks.

Signal handlers only set a flag; the poll loop sees it, stops, and closes the
tasks (their in-flight transactions finish or are left for the next owner to
settle). A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp.web import AppRunner
from aiokafka import AIOKafkaConsumer
from aiokafka import errors as kafka

from app import log as log_setup
from app import web
from app.budget import MemoryBudget
from app.changelog import InputTopicMissing, ensure_changelog
from app.clients import (
    FatalStartupError,
    check_connection,
    make_consumer,
    make_restore_consumer,
    producer_factory,
    transaction_protocol,
)
from app.commit import Committer, make_committer
from app.config import Settings
from app.dedup import dedup_factory
from app.errors import ConfigError
from app.fetch import Downloader, DownloadLimits
from app.kafka.protocol.negotiate import TransactionProtocol
from app.partition import TaskContext
from app.prepare import Preparer
from app.signals import STOP_SIGNALS, received_early
from app.stats import Stats
from app.supervisor import Rebalance, Supervisor

log = logging.getLogger(__name__)
POLL_TIMEOUT_MS = 200
T = TypeVar("T")
# Errors that no retry will fix: stop the service with a clear message.
FATAL_CONSUMER_ERRORS = (
    kafka.GroupAuthorizationFailedError,
    kafka.TopicAuthorizationFailedError,
    kafka.UnsupportedVersionError,
)


class Service:
    def __init__(self, settings: Settings,
                 wrap_committer: Callable[[Committer], Committer] | None = None) -> None:
        self.settings = settings
        self._wrap_committer = wrap_committer  # a testing aid: see chaos/copier.py
        self.stats = Stats()
        self.stopping = asyncio.Event()
        self.supervisor: Supervisor | None = None
        self.last_progress = time.monotonic()
        self.stall_after = settings.health_stall_s
        self._signals = 0
        self._client_errors_seen = log_setup.client_errors.total

    @property
    def ready(self) -> bool:
        return (not self.stopping.is_set() and self.supervisor is not None
                and self.supervisor.ready)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        for sig in received_early():
            self._on_signal(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second %s: exiting now", sig.name)
            os._exit(1)
        log.info("%s received: finishing in-flight transactions", sig.name)
        self.stopping.set()

    async def run(self) -> int:
        settings = self.settings
        try:
            await self._unless_stopped(check_connection(settings))
        except FatalStartupError as exc:
            log.error("cannot start: %s", exc)
            return 1
        if settings.dedup != "off" and not await self._ensure_changelog():
            log.info("stopped: %s", self.stats.summary(0),
                     extra={"event": "stopped", **self.stats.summary_fields(0)})
            return 2 if not self.stopping.is_set() else 0
        web_runner = await web.serve(self, settings.http_port) if settings.http_port else None
        downloader = Downloader(DownloadLimits.from_settings(settings))
        await downloader.start()
        code, supervisor = 0, None
        lag_watch = asyncio.create_task(self.stats.watch_loop_lag())
        try:
            try:
                started = await self._connect(downloader)
            except FatalStartupError as exc:
                log.error("cannot start: %s", exc)
                started, code = None, 1
            if started is not None:
                consumer, supervisor = started
                log.info("consuming", extra={"event": "consuming", "topic": settings.input_topic,
                                             "group": settings.group_id, "pod": settings.pod_name})
                code = await self._poll(consumer, supervisor)
        finally:
            self.stopping.set()  # readiness fails from here on
            lag_watch.cancel()
            held = await self._close(supervisor, downloader, web_runner)
        log.info("stopped: %s", self.stats.summary(held),
                 extra={"event": "stopped", **self.stats.summary_fields(held)})
        return code

    async def _close(self, supervisor: Supervisor | None, downloader: Downloader,
                     web_runner: AppRunner | None) -> int:
        """Close everything, whatever state the connections are in; the partitions held."""
        timeout, held = self.settings.shutdown_timeout_s, 0
        if supervisor is not None:
            held = len(supervisor.slots)
            await _quietly("closing partition tasks", supervisor.close(timeout), timeout + 5)
            await _quietly("stopping the consumer", supervisor.consumer.stop(), 10)
        await _quietly("closing downloads", downloader.close(), 5)
        if web_runner is not None:
            await _quietly("stopping the HTTP server", web_runner.cleanup(), 5)
        return held

    async def _unless_stopped(self, work: Awaitable[T]) -> tuple[bool, T | None]:
        """(True, its result), or (False, None) if a stop was asked for first (then
        ``work`` is cancelled): start-up steps never hold up a SIGTERM."""
        running = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({running, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if running.done():
            return True, running.result()
        running.cancel()
        with contextlib.suppress(BaseException):
            await running
        return False, None

    async def _ensure_changelog(self) -> bool:
        """DEDUP_TOPIC created or checked; False if it is wrong (logged) or a stop came."""
        attempt = 0
        while not self.stopping.is_set():
            try:
                ok, done = await self._unless_stopped(ensure_changelog(self.settings))
            except ConfigError as exc:
                log.error("cannot start: %s", exc, extra={"event": "bad_changelog"})
                return False
            except (kafka.KafkaError, OSError, InputTopicMissing) as exc:
                attempt += 1
                log.warning("waiting to set up DEDUP_TOPIC: %r", exc,
                            extra={"event": "waiting_for_kafka", "attempt": attempt})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), min(30, 2 ** attempt))
                continue
            if ok:
                log.info("dedup changelog: %s", done, extra={"event": "changelog_ready"})
            return ok
        return False

    async def _connect(self, downloader: Downloader
                       ) -> tuple[AIOKafkaConsumer, Supervisor] | None:
        """A started consumer and its supervisor, waiting out a broker that is down."""
        attempt = 0
        while not self.stopping.is_set():
            consumer = make_consumer(self.settings)
            try:
                started, _ = await self._unless_stopped(self._start(consumer, downloader))
                if started and self.supervisor is not None:
                    return consumer, self.supervisor
            except FATAL_CONSUMER_ERRORS:
                await _quietly("stopping the consumer", consumer.stop(), 10)
                raise
            except kafka.KafkaError as exc:
                # Down, restarting, or a coordinator still loading (seen as SyncGroup
                # UnknownError): what a restart would do, without the crash loop.
                attempt += 1
                log.warning("waiting for Kafka at %s: %r", self.settings.kafka_bootstrap_servers,
                            exc, extra={"event": "waiting_for_kafka", "attempt": attempt})
            await _quietly("stopping the consumer", consumer.stop(), 10)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), min(30, 2 ** attempt))
        return None

    async def _start(self, consumer: AIOKafkaConsumer, downloader: Downloader) -> None:
        """The transaction protocol the cluster offers, the supervisor, then the group."""
        kip447 = False
        if self.settings.processing_guarantee == "exactly_once":
            speaking, offered = await transaction_protocol(self.settings)
            kip447 = speaking is not TransactionProtocol.LEGACY
            log.info("transaction protocol %s (the cluster offers %s)", speaking.value, offered,
                     extra={"event": "transaction_protocol", "protocol": speaking.value,
                            "offered": offered})
        self.supervisor = self._supervisor(consumer, downloader, kip447)
        await consumer.start()

    def _supervisor(self, consumer: AIOKafkaConsumer, downloader: Downloader,
                    kip447: bool = False) -> Supervisor:
        settings = self.settings
        preparer = Preparer(settings, downloader, MemoryBudget(settings.max_buffered_bytes),
                            self.stats)
        committer: Committer = make_committer(settings, consumer)
        if self._wrap_committer is not None:
            committer = self._wrap_committer(committer)
        supervisor = Supervisor(TaskContext(
            settings, consumer, preparer, self.stats, committer,
            producer_factory(settings, consumer if kip447 else None),
            make_dedup=dedup_factory(settings) if settings.dedup != "off" else None,
            make_restore_consumer=lambda: make_restore_consumer(settings),
            stable_offsets=kip447))
        consumer.subscribe([settings.input_topic],
                           listener=Rebalance(supervisor, settings.shutdown_timeout_s,
                                              str(settings.pod_name)))
        return supervisor

    def _observe_client_errors(self) -> None:
        errors = log_setup.client_errors
        errors.tick()
        self.stats.kafka_errors.inc(errors.total - self._client_errors_seen)
        self._client_errors_seen = errors.total

    async def _poll(self, consumer: AIOKafkaConsumer, supervisor: Supervisor) -> int:
        observed = 0.0
        while not self.stopping.is_set():
            self.last_progress = time.monotonic()
            if self.last_progress - observed > 1:
                supervisor.observe()
                self._observe_client_errors()
                observed = self.last_progress
            try:
                batch = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            except FATAL_CONSUMER_ERRORS as exc:
                log.error("consumer cannot continue: %r", exc)
                return 1
            except kafka.KafkaError as exc:
                log.warning("poll failed, retrying: %r", exc)
                await asyncio.sleep(1)
                continue
            supervisor.deliver(batch)
        return 0


async def _quietly(what: str, work: Awaitable[object], timeout: float) -> None:
    """Await a shutdown step; a failure or a hang is logged, never raised.

    aiokafka's consumer.stop() can raise CancelledError out of its fetcher while the
    broker is unreachable; that must not cost the summary or the exit code."""
    try:
        await asyncio.wait_for(work, timeout)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled ourselves
        log.warning("%s was cancelled inside a client library", what,
                    extra={"event": "shutdown_step_failed"})
    except Exception as exc:
        log.warning("%s failed: %r", what, exc, extra={"event": "shutdown_step_failed"})
