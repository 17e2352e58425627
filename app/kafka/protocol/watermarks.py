"""A partition's high watermark: the end of its log, every write in it, committed or not.

A ``read_committed`` consumer's ``end_offsets`` answers the last stable offset, which an
open transaction holds back; a reader that stops there misses what later transactions
committed behind it. ListOffsets v2+ with isolation level 0 answers the high watermark.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import errors as kafka
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.offset import OffsetRequest
from aiokafka.structs import TopicPartition

from app.kafka.protocol.errors import for_code

READ_UNCOMMITTED, LATEST = 0, -1
BACKOFF_S = 0.1
_MOVED = (kafka.NotLeaderForPartitionError, kafka.UnknownTopicOrPartitionError,
          kafka.LeaderNotAvailableError, kafka.KafkaConnectionError, kafka.NodeNotReadyError,
          kafka.RequestTimedOutError)


async def high_watermark(client: AIOKafkaClient, tp: TopicPartition, *,
                         timeout_s: float = 30.0) -> int:
    """``tp``'s high watermark, asked of its leader (found again after a move)."""
    deadline = time.monotonic() + timeout_s
    await client.add_topic(tp.topic)
    while True:
        try:
            return await _ask_leader(client, tp)
        except _MOVED:
            if time.monotonic() + BACKOFF_S > deadline:
                raise
        await asyncio.sleep(BACKOFF_S)
        await client.force_metadata_update()


async def _ask_leader(client: AIOKafkaClient, tp: TopicPartition) -> int:
    leader = client.cluster.leader_for_partition(tp)
    if leader is None or leader < 0:
        raise kafka.LeaderNotAvailableError(f"no leader known for {tp}")
    response = await client.send(leader, OffsetRequest(
        -1, READ_UNCOMMITTED, [(tp.topic, [(tp.partition, LATEST)])]))
    for topic, partitions in response.topics:
        for partition, error_code, _timestamp, offset, *_ in partitions:
            if (topic, partition) != (tp.topic, tp.partition):
                continue
            if error_code:
                raise for_code(error_code)(f"ListOffsets {tp}")
            return int(offset)
    raise kafka.UnknownTopicOrPartitionError(f"ListOffsets answered without {tp}")
