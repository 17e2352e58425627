"""DEDUP_TOPIC at start: created if missing, checked if present, like Kafka Streams does
with its changelog topics, and grown when the input topic gained partitions. A mismatch
is a setting error: one line, exit 2.

Input partition p's entries live in changelog partition p, written to that partition by
number (never by a key's hash), so adding changelog partitions moves no entry: the new
ones start empty, like the new input partitions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import errors as kafka
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import InvalidPartitionsError

from app.config import Settings
from app.errors import ConfigError
from app.kafka.clients import connection
from app.ops.steps import unless_stopped

log = logging.getLogger(__name__)


class InputTopicMissing(Exception):
    """The input topic does not exist yet: DEDUP_TOPIC cannot be sized; wait for it."""


async def ensure_changelog(settings: Settings, setting: str = "DEDUP_TOPIC"
                           ) -> tuple[int, str]:
    """Create, grow or check DEDUP_TOPIC (or another topic kept the same way, such as
    PROGRESS_TOPIC, named by ``setting``): its partitions then, and what was done (for
    the log)."""
    admin = AIOKafkaAdminClient(**connection(settings),
                                client_id=f"txingest-{settings.pod_name}-admin")
    await admin.start()
    try:
        return await _ensure(admin, settings, setting)
    finally:
        await admin.close()


async def set_up_changelog(settings: Settings, setting: str, stopping: asyncio.Event,
                           back_off: Callable[[int], Awaitable[None]]) -> int | None:
    """At start: the topic's partitions once created or checked, Kafka waited out; None
    if it is wrong (logged: one line) or a stop came."""
    attempt = 0
    while not stopping.is_set():
        try:
            ok, done = await unless_stopped(stopping, ensure_changelog(settings, setting))
        except ConfigError as exc:
            log.error("cannot start: %s", exc, extra={"event": "bad_changelog"})
            return None
        except (kafka.KafkaError, OSError, InputTopicMissing) as exc:
            attempt += 1
            log.warning("waiting to set up %s: %r", setting, exc,
                        extra={"event": "waiting_for_kafka", "attempt": attempt})
            await back_off(attempt)
            continue
        if not ok or done is None:
            return None
        log.info("%s: %s", setting, done[1], extra={"event": "changelog_ready"})
        return done[0]
    return None


class ChangelogPartitions:
    """DEDUP_TOPIC's partitions as this process last saw them. A task given an input
    partition past them (the input topic gained partitions while the service ran) grows
    the changelog first: restoring a partition that does not exist would wait forever."""

    def __init__(self, settings: Settings, count: int, setting: str = "DEDUP_TOPIC") -> None:
        self.settings, self.count, self.setting = settings, count, setting
        self._lock = asyncio.Lock()

    async def include(self, partition: int) -> None:
        async with self._lock:
            if partition < self.count:
                return
            self.count, done = await ensure_changelog(self.settings, self.setting)
            if partition >= self.count:
                raise InputTopicMissing(f"{self.settings.input_topic} partition {partition}")
        log.info("%s: %s", self.setting, done, extra={"event": "changelog_ready"})


async def _ensure(admin: AIOKafkaAdminClient, settings: Settings, setting: str
                  ) -> tuple[int, str]:
    """The topic's partitions once created, grown or checked, and what was done."""
    topic = str(getattr(settings, setting.lower()))
    existing = set(await admin.list_topics())
    if settings.input_topic not in existing:
        raise InputTopicMissing(settings.input_topic)
    partitions = await _partitions(admin, settings.input_topic)
    if topic not in existing:
        replicas = settings.dedup_replication_factor or min(3, await _brokers(admin))
        await admin.create_topics([NewTopic(topic, partitions, replicas,
                                            topic_configs={"cleanup.policy": "compact"})])
        return partitions, (f"created {topic}: {partitions} partitions, {replicas} replicas, "
                            "compacted")
    policy = await _cleanup_policy(admin, topic)
    check_cleanup_policy(topic, policy, setting)
    found = await _partitions(admin, topic)
    if found > partitions:
        raise ConfigError(f"invalid setting {setting}={topic}: it has {found} partitions, "
                          f"more than INPUT_TOPIC {settings.input_topic} ({partitions}): "
                          "it belongs to another input topic")
    if found < partitions:
        await _grow(admin, topic, partitions)
        return partitions, f"grew {topic} from {found} to {partitions} partitions, as the input"
    return partitions, f"checked {topic}: {partitions} partitions, cleanup.policy={policy}"


def check_cleanup_policy(topic: str, policy: str, setting: str = "DEDUP_TOPIC") -> None:
    """Only compaction keeps every live key: ``delete`` (alone or with ``compact``) drops
    old segments, so a restore could miss entries or find its start moved under it."""
    if {part.strip() for part in policy.split(",")} != {"compact"}:
        raise ConfigError(f"invalid setting {setting}={topic}: cleanup.policy is {policy!r}, "
                          "it must be compact alone (delete drops live keys)")


async def _grow(admin: AIOKafkaAdminClient, topic: str, partitions: int) -> None:
    try:
        await admin.create_partitions({topic: NewPartitions(partitions)})
    except InvalidPartitionsError:  # another replica grew it first
        if await _partitions(admin, topic) < partitions:
            raise


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> int:
    (described,) = await admin.describe_topics([topic])
    return len(described["partitions"])


async def _brokers(admin: AIOKafkaAdminClient) -> int:
    return len((await admin.describe_cluster())["brokers"])


async def _cleanup_policy(admin: AIOKafkaAdminClient, topic: str) -> str:
    (response,) = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})])
    for resource in response.to_object()["resources"]:
        for entry in resource["config_entries"]:
            if entry["config_names"] == "cleanup.policy":
                return str(entry["config_value"])
    return "delete"
