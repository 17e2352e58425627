"""DEDUP_TOPIC at start: created if missing, checked if present, like Kafka Streams does
with its changelog topics. A mismatch is a setting error: one line, exit 2."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from app.config import Settings
from app.errors import ConfigError
from app.kafka.clients import connection


class InputTopicMissing(Exception):
    """The input topic does not exist yet: DEDUP_TOPIC cannot be sized; wait for it."""


async def ensure_changelog(settings: Settings) -> str:
    """Create or check DEDUP_TOPIC; what was done, for the log."""
    admin = AIOKafkaAdminClient(**connection(settings),
                                client_id=f"txingest-{settings.pod_name}-admin")
    await admin.start()
    try:
        return await _ensure(admin, settings)
    finally:
        await admin.close()


async def _ensure(admin: AIOKafkaAdminClient, settings: Settings) -> str:
    topic, existing = str(settings.dedup_topic), set(await admin.list_topics())
    if settings.input_topic not in existing:
        raise InputTopicMissing(settings.input_topic)
    partitions = await _partitions(admin, settings.input_topic)
    if topic not in existing:
        replicas = settings.dedup_replication_factor or min(3, await _brokers(admin))
        await admin.create_topics([NewTopic(topic, partitions, replicas,
                                            topic_configs={"cleanup.policy": "compact"})])
        return f"created {topic}: {partitions} partitions, {replicas} replicas, compacted"
    found = await _partitions(admin, topic)
    if found != partitions:
        raise ConfigError(f"invalid setting DEDUP_TOPIC={topic}: it has {found} partitions, "
                          f"INPUT_TOPIC {settings.input_topic} has {partitions}; they must match")
    policy = await _cleanup_policy(admin, topic)
    if "compact" not in policy.split(","):
        raise ConfigError(f"invalid setting DEDUP_TOPIC={topic}: cleanup.policy is {policy!r}, "
                          "it must include compact")
    return f"checked {topic}: {partitions} partitions, cleanup.policy={policy}"


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
