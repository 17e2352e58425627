"""The DLQ offsets a re-drive run reads: per partition, from where the job got to
(its committed offset, or the selection's start) to the end as of the run's start."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.config import Settings
from app.kafka.clients import connection
from app.redrive.job import Options, RedriveFailed, UsageError


@dataclass
class Span:
    """The DLQ offsets a run reads on one partition: [start, stop)."""

    start: int
    stop: int


async def plan(settings: Settings, consumer: AIOKafkaConsumer, options: Options
               ) -> dict[TopicPartition, Span]:
    """Per DLQ partition: from the job's committed offset (or the selection's start)
    to the end as of now (the last stable offset, as the consumer reads committed)."""
    topic = settings.dlq_topic
    partitions = await topic_partitions(settings, topic)
    if not partitions:
        raise RedriveFailed(f"DLQ_TOPIC {topic!r} does not exist")
    selection = options.selection
    missing = selection.partitions - partitions
    if missing:
        raise UsageError(f"--partition {min(missing)}: {topic!r} has partitions "
                         f"0-{max(partitions)}")
    tps = [TopicPartition(topic, p) for p in sorted(selection.partitions or partitions)]
    consumer.assign(tps)
    first = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    by_time = {}
    if selection.since_ms is not None:
        by_time = await consumer.offsets_for_times({tp: selection.since_ms for tp in tps})
    spans = {}
    for tp in tps:
        start = max(first[tp], await consumer.committed(tp) or 0, selection.from_offset or 0)
        if selection.since_ms is not None:
            found = by_time.get(tp)
            start = max(start, found.offset if found is not None else end[tp])
        stop = end[tp] if selection.to_offset is None else min(end[tp], selection.to_offset + 1)
        spans[tp] = Span(start, max(start, stop))
    return spans


async def topic_partitions(settings: Settings, topic: str) -> set[int]:
    """The topic's partitions; empty if it does not exist (asking for every topic's
    metadata, so a broker that auto-creates topics does not create it)."""
    admin = AIOKafkaAdminClient(**connection(settings))
    await admin.start()
    try:
        described = await admin.describe_topics()
    finally:
        await admin.close()
    return {p["partition"] for t in described if t["topic"] == topic for p in t["partitions"]}
