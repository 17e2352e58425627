"""A new task's committed offset under KIP-447, and the departed replicas' open
transactions that hold it.

``require_stable`` waits while a transaction holds the partition's offsets; with
transactional ids per pod, a replica that left the group with one open (paused past
its session timeout) would hold it until the transaction timeout. After a short grace
its transactions are fenced (app/kafka/protocol/zombies.py), at most once per grace.
"""

from __future__ import annotations

import logging
import time

from aiokafka import errors as kafka
from aiokafka.client import AIOKafkaClient
from aiokafka.structs import TopicPartition

from app.config import Settings
from app.kafka.clients import connection
from app.kafka.protocol.errors import UnstableOffsetCommitError
from app.kafka.protocol.stable_offsets import fetch_stable_offsets
from app.kafka.protocol.zombies import fence_departed
from app.ops.stats import Stats
from app.task.context import TaskContext

log = logging.getLogger(__name__)
# How long an offset may stay unsettled before its holders are looked for: a
# transaction that is committing settles within milliseconds.
GRACE_S = 1.5


async def stable_committed(context: TaskContext, tp: TopicPartition) -> int | None:
    """The group's committed offset once no pending transaction can change it (None:
    none committed); raise UnstableOffsetCommitError after the transaction timeout."""
    settings = context.settings
    deadline = time.monotonic() + settings.transaction_timeout_ms / 1000
    while True:
        grace = min(GRACE_S, max(0.0, deadline - time.monotonic()))
        try:
            return (await fetch_stable_offsets(
                context.consumer._client, settings.group_id, [tp], timeout_s=grace))[tp]
        except UnstableOffsetCommitError:
            if time.monotonic() >= deadline:
                raise
        await fence_zombies(settings, context.stats, [tp])


async def fence_zombies(settings: Settings, stats: Stats, waiting: list[TopicPartition]) -> None:
    """Fence the open transactions of replicas gone from the group, through a
    connection of its own; a failure is logged, and the transaction timeout still ends
    them."""
    client = AIOKafkaClient(**connection(settings),
                            client_id=f"txingest-{settings.pod_name}-fence")
    try:
        await client.bootstrap()
        fenced = await fence_departed(
            client, settings.group_id, settings.transactional_id_prefix or settings.group_id,
            waiting=waiting, transaction_timeout_ms=settings.transaction_timeout_ms)
    except (kafka.KafkaError, OSError) as exc:
        log.warning("could not fence departed replicas' transactions: %r", exc,
                    extra={"event": "zombie_fence_failed",
                           "partitions": [tp.partition for tp in waiting]})
        return
    finally:
        await client.close()
    for transactional_id in fenced:
        log.info("fenced %s: its replica left the group with the transaction open",
                 transactional_id, extra={"event": "zombie_fenced",
                                          "transactional_id": transactional_id})
        stats.zombie_fenced()
