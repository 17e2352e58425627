"""A group's committed offsets, read only once no pending transaction can change them.

``OffsetFetch`` v7 with ``require_stable`` answers UNSTABLE_OFFSET_COMMIT for a
partition whose offset an open transaction has sent (KIP-447), and for a moment after
that transaction commits, while the coordinator applies it. A new owner retries with
backoff until the answer settles.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from aiokafka import errors as kafka
from aiokafka.client import AIOKafkaClient, ConnectionGroup, CoordinationType
from aiokafka.structs import TopicPartition

from app.kafka.protocol.errors import UnstableOffsetCommitError, for_code
from app.kafka.protocol.offset_messages import OffsetFetchRequest

FIRST_BACKOFF_S = 0.005  # the settling after a commit takes milliseconds
LONGEST_BACKOFF_S = 0.5
_COORDINATOR_GONE = (kafka.CoordinatorNotAvailableError, kafka.NotCoordinatorError,
                     kafka.NodeNotReadyError, kafka.RequestTimedOutError,
                     kafka.KafkaConnectionError)
_COORDINATOR_BUSY = (kafka.CoordinatorLoadInProgressError,)

Offsets = dict[TopicPartition, int | None]


async def fetch_stable_offsets(
        client: AIOKafkaClient, group_id: str, partitions: Iterable[TopicPartition], *,
        timeout_s: float, on_unstable: Callable[[list[TopicPartition]], None] | None = None,
) -> Offsets:
    """Each partition's committed offset (None: none committed), once stable.

    Raise UnstableOffsetCommitError if a partition is still unstable after
    ``timeout_s``; any other error from the group coordinator as aiokafka's class."""
    wanted = sorted(set(partitions))
    deadline = time.monotonic() + timeout_s
    backoff, node_id = FIRST_BACKOFF_S, None
    while True:
        try:
            if node_id is None:
                node_id = await client.coordinator_lookup(CoordinationType.GROUP, group_id)
            offsets, unstable = await _fetch_once(client, node_id, group_id, wanted)
        except _COORDINATOR_GONE + _COORDINATOR_BUSY as exc:
            if isinstance(exc, _COORDINATOR_GONE):
                node_id = None
            unstable = wanted
        else:
            if not unstable:
                return {tp: offsets.get(tp) for tp in wanted}
            if on_unstable is not None:
                on_unstable(unstable)
        if time.monotonic() + backoff > deadline:
            raise UnstableOffsetCommitError(
                f"group {group_id}: offsets of {unstable[:3]} still unsettled after "
                f"{timeout_s:g}s")
        await asyncio.sleep(backoff)
        backoff = min(LONGEST_BACKOFF_S, backoff * 2)


async def _fetch_once(client: AIOKafkaClient, node_id: int, group_id: str,
                      wanted: list[TopicPartition]) -> tuple[Offsets, list[TopicPartition]]:
    response = await client.send(node_id, OffsetFetchRequest(group_id, wanted),
                                 group=ConnectionGroup.COORDINATION)
    if response.error_code:
        raise for_code(response.error_code)(f"OffsetFetch for group {group_id}")
    offsets: Offsets = {}
    unstable: list[TopicPartition] = []
    for topic, partitions, _ in response.topics:
        for partition, offset, _epoch, _metadata, error_code, _ in partitions:
            tp = TopicPartition(topic, partition)
            error = for_code(error_code)
            if error is UnstableOffsetCommitError:
                unstable.append(tp)
            elif error is not kafka.NoError:
                raise error(f"OffsetFetch for group {group_id}, {tp}")
            else:
                offsets[tp] = offset if offset >= 0 else None
    return offsets, unstable
