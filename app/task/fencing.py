"""A new task's committed offset under KIP-447, and the open transactions of replicas
gone (or of this pod's previous process) that would hold a new task back.

``require_stable`` waits while a transaction holds the partition's offsets; with
transactional ids per pod, a replica that left the group with one open (paused past
its session timeout) would hold it until the transaction timeout. After a short grace
its transactions are fenced (app/kafka/protocol/zombies.py), at most once per grace.
The same holds for a dedup changelog partition whose stable offset an open transaction
holds back (app/dedup/store.py reads it to its high watermark). A process killed with
a transaction open leaves no offsets in it when its records went first (transactions
v1): its pod fences its own ids at its next start.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import errors as kafka
from aiokafka.client import AIOKafkaClient
from aiokafka.structs import TopicPartition

from app.config import Settings
from app.kafka.clients import connection
from app.kafka.protocol.errors import UnstableOffsetCommitError
from app.kafka.protocol.stable_offsets import fetch_stable_offsets
from app.kafka.protocol.zombies import (
    Holds,
    fence_departed,
    fence_own,
    written_without_offsets,
)
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


async def fence_zombies(settings: Settings, stats: Stats, waiting: list[TopicPartition],
                       holding: Holds | None = None, cause: str = "offsets") -> None:
    """Fence the open transactions of replicas gone from the group that hold the
    group's offsets of ``waiting`` (or what ``holding`` names; ``cause`` says which, in
    the log); a failure is logged, and the transaction timeout still ends them."""
    fence = functools.partial(
        fence_departed, group_id=settings.group_id, prefix=str(settings.transactional_id_prefix),
        waiting=waiting, holding=holding, transaction_timeout_ms=settings.transaction_timeout_ms)
    fenced = await _fencing(settings, fence, [tp.partition for tp in waiting])
    _log_fenced(stats, fenced, cause, f"its replica left the group with the transaction "
                f"open ({cause})")


async def sweep_departed(settings: Settings, stats: Stats,
                         assigned: list[TopicPartition]) -> None:
    """After a rebalance, by the one member given input partition 0: fence departed
    replicas' transactions that wrote to the output topics without offsets, which
    would hold those topics' last stable offsets back until the transaction timeout."""
    topics = [settings.output_topic, settings.dlq_topic]
    if settings.dedup != "off":
        topics.append(str(settings.dedup_topic))
    if settings.file_chunk_records:
        topics.append(str(settings.progress_topic))
    await fence_zombies(settings, stats, assigned, written_without_offsets(topics),
                        cause="outputs without offsets")


async def fence_previous_life(settings: Settings, stats: Stats) -> None:
    """At start, per-pod ids: abort what this pod's killed process left open, on any
    slot, before the group gives it partitions."""
    fence = functools.partial(fence_own, prefix=str(settings.transactional_id_prefix),
                              pod=str(settings.pod_name),
                              transaction_timeout_ms=settings.transaction_timeout_ms)
    _log_fenced(stats, await _fencing(settings, fence, []), "previous process",
                "this pod's previous process left its transaction open")


def _log_fenced(stats: Stats, fenced: list[str], cause: str, why: str) -> None:
    for transactional_id in fenced:
        log.info("fenced %s: %s", transactional_id, why, extra={
            "event": "zombie_fenced", "transactional_id": transactional_id, "cause": cause})
        stats.zombie_fenced()


async def _fencing(settings: Settings, fence: Callable[[AIOKafkaClient], Awaitable[list[str]]],
                   partitions: list[int]) -> list[str]:
    """``fence`` run through a connection of its own; nothing fenced if it fails."""
    client = AIOKafkaClient(**connection(settings),
                            client_id=f"txingest-{settings.pod_name}-fence")
    try:
        await client.bootstrap()
        return await fence(client)
    except (kafka.KafkaError, OSError) as exc:
        log.warning("could not fence open transactions: %r", exc,
                    extra={"event": "zombie_fence_failed", "partitions": partitions})
        return []
    finally:
        await client.close()
