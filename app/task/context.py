"""What every partition task of the service shares: settings, clients, and the state
kept across a partition's task lives."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from app.config import Settings
from app.dedup.store import Deduplicator
from app.files.prepare import Preparer
from app.kafka.clients import RestoreConsumer
from app.kafka.committer import Committer
from app.ops.stats import Stats
from app.task.chunks import Chunks
from app.task.producers import Producers


@dataclass(frozen=True)
class TaskContext:
    """What every partition task of the service shares."""

    settings: Settings
    consumer: AIOKafkaConsumer
    preparer: Preparer
    stats: Stats
    committer: Committer
    producers: Producers  # app/task/producers.py: a pool, or one producer a task
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    # Attempts of a record whose transaction timed out, kept across its partition's tasks.
    timeouts: collections.Counter[tuple[TopicPartition, int]] = field(
        default_factory=collections.Counter)
    # After a failed group, each partition's records up to this offset commit one by one.
    singles_until: dict[TopicPartition, int] = field(default_factory=dict)
    make_dedup: Callable[[int], Deduplicator] | None = None  # with DEDUP on
    make_chunks: Callable[[int], Chunks] | None = None  # with FILE_CHUNK_RECORDS on
    make_restore_consumer: Callable[[], RestoreConsumer] | None = None
    # KIP-447: the committed offset is read with require_stable (no pending transaction).
    stable_offsets: bool = False
