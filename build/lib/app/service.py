"""The service: one consumer polling for every partition, a supervisor owning tasks.

Signal handlers only set a flag; the poll loop sees it, stops, and closes the
tasks (their in-flight transactions finish or are left for the next owner to
settle). A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import time

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka import errors as kafka
from aiokafka.structs import TopicPartition

from app import web
from app.clients import FatalStartupError, check_connection, make_consumer, producer_factory
from app.config import Settings
from app.fetch import Downloader, DownloadLimits
from app.prepare import ByteBudget, Preparer
from app.stats import Stats
from app.supervisor import Supervisor

log = logging.getLogger(__name__)
POLL_TIMEOUT_MS = 200
THRASH_REBALANCES = 5
# Errors that no retry will fix: stop the service with a clear message.
FATAL_CONSUMER_ERRORS = (
    kafka.GroupAuthorizationFailedError,
    kafka.TopicAuthorizationFailedError,
    kafka.UnsupportedVersionError,
)


class Rebalance(ConsumerRebalanceListener):
    """aiokafka awaits these before rejoining: closing here finishes in time."""

    def __init__(self, supervisor: Supervisor, timeout: float, pod_name: str) -> None:
        self.supervisor = supervisor
        self.timeout = timeout
        self.pod_name = pod_name
        self._recent: collections.deque[float] = collections.deque(maxlen=THRASH_REBALANCES)

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            log.info("partitions revoked", extra={"event": "revoked",
                                                  "partitions": _numbers(revoked)})
        await self.supervisor.revoke(revoked, self.timeout)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"event": "assigned",
                                               "partitions": _numbers(assigned)})
        self.supervisor.assign(assigned)
        self._recent.append(time.monotonic())
        if len(self._recent) == THRASH_REBALANCES and self._recent[-1] - self._recent[0] < 60:
            # aiokafka reports a duplicate group.instance.id only as "member_id not recognized".
            log.warning("%d rebalances within a minute: replicas are joining and leaving "
                        "often, or another process uses POD_NAME=%s (each would take this "
                        "member's slot in turn)", THRASH_REBALANCES, self.pod_name)
            self._recent.clear()


def _numbers(partitions: set[TopicPartition]) -> list[int]:
    return sorted(tp.partition for tp in partitions)


def download_limits(settings: Settings) -> DownloadLimits:
    return DownloadLimits(
        max_file_bytes=settings.max_file_bytes,
        connect_timeout_s=settings.download_connect_timeout_s,
        read_timeout_s=settings.download_read_timeout_s,
        total_timeout_s=settings.download_total_timeout_s,
        max_concurrent=settings.max_concurrent_downloads,
        allow_private_networks=settings.download_allow_private_networks,
        allowed_hosts=settings.allowed_hosts,
        allowed_ports=settings.allowed_ports,
        max_redirects=settings.download_max_redirects,
    )


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = Stats()
        self.stopping = asyncio.Event()
        self.supervisor: Supervisor | None = None
        self.last_progress = time.monotonic()
        self.stall_after = settings.health_stall_s
        self._signals = 0

    @property
    def ready(self) -> bool:
        return (not self.stopping.is_set() and self.supervisor is not None
                and self.supervisor.ready)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

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
            await check_connection(settings)
        except FatalStartupError as exc:
            log.error("cannot start: %s", exc)
            return 1
        web_runner = await web.serve(self, settings.http_port) if settings.http_port else None
        downloader = Downloader(download_limits(settings))
        await downloader.start()
        code, held, supervisor = 0, 0, None
        try:
            started = await self._connect(downloader)
            if started is not None:
                consumer, supervisor = started
                log.info("consuming", extra={"event": "consuming", "topic": settings.input_topic,
                                             "group": settings.group_id, "pod": settings.pod_name})
                code = await self._poll(consumer, supervisor)
        finally:
            self.stopping.set()  # readiness fails from here on
            if supervisor is not None:
                held = len(supervisor.tasks)
                await supervisor.close(settings.shutdown_timeout_s)
                await supervisor.consumer.stop()
            await downloader.close()
            if web_runner is not None:
                await web_runner.cleanup()
        log.info("stopped: %s", self.stats.summary(held),
                 extra={"event": "stopped", **self.stats.summary_fields(held)})
        return code

    async def _connect(self, downloader: Downloader
                       ) -> tuple[AIOKafkaConsumer, Supervisor] | None:
        """A started consumer and its supervisor, waiting out a broker that is down."""
        attempt = 0
        while not self.stopping.is_set():
            consumer = make_consumer(self.settings)
            self.supervisor = self._supervisor(consumer, downloader)
            try:
                await consumer.start()
                return consumer, self.supervisor
            except FATAL_CONSUMER_ERRORS:
                await consumer.stop()
                raise
            except kafka.KafkaError as exc:
                # Down, restarting, or a coordinator still loading (seen as SyncGroup
                # UnknownError): what a restart would do, without the crash loop.
                attempt += 1
                log.warning("waiting for Kafka at %s: %r", self.settings.kafka_bootstrap_servers,
                            exc, extra={"event": "waiting_for_kafka", "attempt": attempt})
                await consumer.stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), min(30, 2 ** attempt))
        return None

    def _supervisor(self, consumer: AIOKafkaConsumer, downloader: Downloader) -> Supervisor:
        settings = self.settings
        preparer = Preparer(settings, downloader, ByteBudget(settings.max_buffered_bytes),
                            self.stats)
        supervisor = Supervisor(settings, consumer, preparer, self.stats,
                                producer_factory(settings))
        consumer.subscribe([settings.input_topic],
                           listener=Rebalance(supervisor, settings.shutdown_timeout_s,
                                              str(settings.pod_name)))
        return supervisor

    async def _poll(self, consumer: AIOKafkaConsumer, supervisor: Supervisor) -> int:
        observed = 0.0
        while not self.stopping.is_set():
            self.last_progress = time.monotonic()
            if self.last_progress - observed > 1:
                supervisor.observe()
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
