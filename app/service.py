"""The service: one consumer polling for every partition, a supervisor owning tasks.

Signal handlers only set a flag; the poll loop sees it, stops, and closes the
tasks (their in-flight transactions finish or are left for the next owner to
settle). A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka import errors as kafka

from app.config import Settings
from app.dedup.changelog import set_up_changelog
from app.dedup.store import dedup_factory
from app.files.budget import MemoryBudget
from app.files.fetch import Downloader, DownloadLimits
from app.files.prepare import Preparer
from app.files.spool import Spool
from app.kafka.clients import (
    FatalStartupError,
    check_connection,
    make_consumer,
    make_restore_consumer,
    producer_factory,
    transaction_protocol,
)
from app.kafka.committer import Committer, make_committer
from app.kafka.protocol.negotiate import TransactionProtocol
from app.ops import log as log_setup
from app.ops import web
from app.ops.signals import StopOnSignals
from app.ops.stats import Stats
from app.ops.steps import Every, quietly, unless_stopped
from app.task.chunks import chunks_factory
from app.task.context import TaskContext
from app.task.fencing import fence_previous_life
from app.task.producers import producer_source
from app.task.supervisor import Rebalance, Supervisor

log = logging.getLogger(__name__)
POLL_TIMEOUT_MS = 200
# How often the input's last stable offsets are asked for (paused partitions' lag).
LIST_OFFSETS_EVERY_S = 10.0
T = TypeVar("T")
# Errors that no retry will fix: stop the service with a clear message.
FATAL_CONSUMER_ERRORS = (
    kafka.GroupAuthorizationFailedError,
    kafka.TopicAuthorizationFailedError,
    kafka.UnsupportedVersionError,
)


class Service:
    """The whole service for one process.

    One extension point: ``committer`` makes the committer once, at start. A subclass
    may wrap what it returns (chaos/copier.py injects aborts so); nothing else here is
    meant to be overridden."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = Stats()
        self.stopping = asyncio.Event()
        self.supervisor: Supervisor | None = None
        self.last_progress = time.monotonic()
        self.polling = False  # the poll loop runs: only then can it stall
        self.stall_after = settings.health_stall_s
        self.stats.transaction_timeout.set(settings.transaction_timeout_ms / 1000)
        self.signals = StopOnSignals(self.stopping)
        self._client_errors_seen = log_setup.client_errors.total
        # DEDUP_TOPIC's and PROGRESS_TOPIC's partitions, as found or made at start
        self._changelog_partitions: int | None = 0
        self._progress_partitions: int | None = 0
        self.spool = Spool(str(settings.spool_dir), str(settings.pod_name),
                           settings.spool_max_bytes)
        # Negotiated at start (exactly once only); legacy: aiokafka's own requests.
        self.protocol = TransactionProtocol.LEGACY

    @property
    def ready(self) -> bool:
        return (not self.stopping.is_set() and self.supervisor is not None
                and self.supervisor.ready)

    def install_signal_handlers(self) -> None:
        self.signals.install()

    async def run(self) -> int:
        try:
            await unless_stopped(self.stopping, check_connection(self.settings))
        except FatalStartupError as exc:
            log.error("cannot start: %s", exc)
            return 1
        # Probes answer from here on: a liveness probe must not fail while Kafka is awaited.
        port = self.settings.http_port
        web_runner = await web.serve(self, port) if port else None
        try:
            return await self._serve()
        finally:
            if web_runner is not None:
                await quietly("stopping the HTTP server", web_runner.cleanup(), 5)

    async def _serve(self) -> int:
        settings = self.settings
        if not await self._ensure_changelogs():
            log.info("stopped: %s", self.stats.summary(0),
                     extra={"event": "stopped", **self.stats.summary_fields(0)})
            return 2 if not self.stopping.is_set() else 0
        left = self.spool.clean()  # what a killed process of this pod left behind
        log.info("spool ready: %s (%d files left by a previous run removed)", self.spool.dir,
                 left, extra={"event": "spool_cleaned", "files": left})
        downloader = Downloader(DownloadLimits.from_settings(settings),
                                resumed=self.stats.download_resumed)
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
            held = await self._close(supervisor, downloader)
        log.info("stopped: %s", self.stats.summary(held),
                 extra={"event": "stopped", **self.stats.summary_fields(held)})
        return code

    async def _close(self, supervisor: Supervisor | None, downloader: Downloader) -> int:
        """Close everything, whatever state the connections are in; the partitions held."""
        timeout, held = self.settings.shutdown_timeout_s, 0
        if supervisor is not None:
            held = len(supervisor.slots)
            await quietly("closing partition tasks", supervisor.close(timeout), timeout + 5)
            await quietly("stopping the producers", supervisor.context.producers.close(
                timeout), timeout + 10)
            await quietly("stopping the consumer", supervisor.consumer.stop(), 10)
        await quietly("closing downloads", downloader.close(), 5)
        return held

    async def _ensure_changelogs(self) -> bool:
        """DEDUP_TOPIC and PROGRESS_TOPIC, those in use, created or checked; False if one
        is wrong (logged) or a stop came."""
        if self.settings.dedup != "off":
            self._changelog_partitions = await set_up_changelog(
                self.settings, "DEDUP_TOPIC", self.stopping, self._back_off)
            if self._changelog_partitions is None:
                return False
        if self.settings.file_chunk_records:
            self._progress_partitions = await set_up_changelog(
                self.settings, "PROGRESS_TOPIC", self.stopping, self._back_off)
            return self._progress_partitions is not None
        return True

    async def _connect(self, downloader: Downloader
                       ) -> tuple[AIOKafkaConsumer, Supervisor] | None:
        """A started consumer and its supervisor, waiting out a broker that is down."""
        attempt = 0
        while not self.stopping.is_set():
            consumer = make_consumer(self.settings)
            try:
                started, _ = await unless_stopped(self.stopping,
                                                  self._start(consumer, downloader))
                if started and self.supervisor is not None:
                    return consumer, self.supervisor
            except FATAL_CONSUMER_ERRORS:
                await quietly("stopping the consumer", consumer.stop(), 10)
                raise
            except kafka.KafkaError as exc:
                # Down, restarting, or a coordinator still loading (seen as SyncGroup
                # UnknownError): what a restart would do, without the crash loop.
                attempt += 1
                log.warning("waiting for Kafka at %s: %r", self.settings.kafka_bootstrap_servers,
                            exc, extra={"event": "waiting_for_kafka", "attempt": attempt})
            await quietly("stopping the consumer", consumer.stop(), 10)
            await self._back_off(attempt)
        return None

    async def _back_off(self, attempt: int) -> None:
        """Wait before trying Kafka again (up to 30 s), or less if a stop comes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), min(30, 2 ** attempt))

    async def _start(self, consumer: AIOKafkaConsumer, downloader: Downloader) -> None:
        """The transaction protocol the cluster offers, the supervisor, then the group."""
        if self.settings.processing_guarantee == "exactly_once":
            self.protocol, offered = await transaction_protocol(self.settings)
            self.stats.protocol_chosen(self.protocol.value, offered)
            if self.settings.transactional_id_scheme == "pod":
                await fence_previous_life(self.settings, self.stats)
        self.supervisor = self._supervisor(consumer, downloader)
        await consumer.start()

    def _supervisor(self, consumer: AIOKafkaConsumer, downloader: Downloader) -> Supervisor:
        settings, kip447 = self.settings, self.protocol is not TransactionProtocol.LEGACY
        preparer = Preparer(settings, downloader, MemoryBudget(settings.max_buffered_bytes),
                            self.stats, spool=self.spool)
        supervisor = Supervisor(TaskContext(
            settings, consumer, preparer, self.stats, self.committer(consumer),
            producer_source(settings, producer_factory(
                settings, consumer if kip447 else None,
                transactions_v2=self.protocol is TransactionProtocol.V2), self.stats),
            make_dedup=(dedup_factory(settings, self._changelog_partitions or 0)
                        if settings.dedup != "off" else None),
            make_chunks=(chunks_factory(settings, self._progress_partitions or 0, preparer)
                         if settings.file_chunk_records else None),
            make_restore_consumer=lambda: make_restore_consumer(settings),
            stable_offsets=kip447))
        consumer.subscribe([settings.input_topic],
                           listener=Rebalance(supervisor, settings.shutdown_timeout_s,
                                              str(settings.pod_name)))
        return supervisor

    def committer(self, consumer: AIOKafkaConsumer) -> Committer:
        """The committer of PROCESSING_GUARANTEE, made once at start (the extension point)."""
        return make_committer(self.settings, consumer,
                              offsets_first=self.protocol is TransactionProtocol.V2)

    def _observe_client_errors(self) -> None:
        errors = log_setup.client_errors
        errors.tick()
        self.stats.kafka_errors.inc(errors.total - self._client_errors_seen)
        self._client_errors_seen = errors.total

    async def _poll(self, consumer: AIOKafkaConsumer, supervisor: Supervisor) -> int:
        self.polling, listing = True, Every(LIST_OFFSETS_EVERY_S)
        observed = 0.0
        try:
            while not self.stopping.is_set():
                self.last_progress = time.monotonic()
                if self.last_progress - observed > 1:
                    supervisor.observe()
                    self._observe_client_errors()
                    observed = self.last_progress
                listing.start_due(supervisor.list_stable_offsets, self.last_progress)
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
        finally:
            listing.cancel()
