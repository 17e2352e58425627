"""KIP-447's messages: TxnOffsetCommit v3-v5 and OffsetFetch v7 (``require_stable``).

Field names follow Kafka's JSON message definitions (snake_case); the unit tests
check each version against those definitions from the kafka-clients jar.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka.protocol.api import RequestStruct, Response
from aiokafka.protocol.types import Boolean, CompactArray, Int16, Int32, Int64
from aiokafka.structs import TopicPartition

from app.kafka.protocol.versions import BoundedRequest
from app.kafka.protocol.wire import COMPACT_STRING, compact_array, flexible

NO_LEADER_EPOCH = -1


@dataclass(frozen=True, slots=True)
class GroupMetadata:
    """Who commits, as the group coordinator knows it (Java: ConsumerGroupMetadata)."""

    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None


class TxnOffsetCommitResponse_v3(Response):
    API_KEY = 28
    API_VERSION = 3
    SCHEMA = flexible(
        ("throttle_time_ms", Int32),
        ("topics", compact_array(
            ("name", COMPACT_STRING),
            ("partitions", compact_array(("partition_index", Int32), ("error_code", Int16))),
        )),
    )


class TxnOffsetCommitResponse_v4(Response):
    API_KEY = 28
    API_VERSION = 4  # may carry TRANSACTION_ABORTABLE (KIP-890)
    SCHEMA = TxnOffsetCommitResponse_v3.SCHEMA


class TxnOffsetCommitResponse_v5(Response):
    API_KEY = 28
    API_VERSION = 5
    SCHEMA = TxnOffsetCommitResponse_v3.SCHEMA


class TxnOffsetCommitRequest_v3(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 28
    API_VERSION = 3
    RESPONSE_TYPE = TxnOffsetCommitResponse_v3
    SCHEMA = flexible(
        ("transactional_id", COMPACT_STRING),
        ("group_id", COMPACT_STRING),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id_or_member_epoch", Int32),
        ("member_id", COMPACT_STRING),
        ("group_instance_id", COMPACT_STRING),
        ("topics", compact_array(
            ("name", COMPACT_STRING),
            ("partitions", compact_array(
                ("partition_index", Int32),
                ("committed_offset", Int64),
                ("committed_leader_epoch", Int32),
                ("committed_metadata", COMPACT_STRING),
            )),
        )),
    )


class TxnOffsetCommitRequest_v4(TxnOffsetCommitRequest_v3):
    API_VERSION = 4
    RESPONSE_TYPE = TxnOffsetCommitResponse_v4


class TxnOffsetCommitRequest_v5(TxnOffsetCommitRequest_v3):
    """Under transactions v2 it also adds the group to the transaction (no AddOffsetsToTxn)."""

    API_VERSION = 5
    RESPONSE_TYPE = TxnOffsetCommitResponse_v5


class TxnOffsetCommitRequest(BoundedRequest):
    """Offsets into a transaction, with the committer's group membership (v3+).

    ``max_version``: 4 under the older transaction protocol (a v5 request there is
    refused), 5 under transactions v2."""

    API_KEY = 28
    _CLASSES = (TxnOffsetCommitRequest_v3, TxnOffsetCommitRequest_v4,
                TxnOffsetCommitRequest_v5)

    def __init__(self, transactional_id: str, producer_id: int, producer_epoch: int,
                 group: GroupMetadata, offsets: Mapping[TopicPartition, int],
                 max_version: int = 4) -> None:
        self.transactional_id, self.group, self.offsets = transactional_id, group, offsets
        self.producer_id, self.producer_epoch = producer_id, producer_epoch
        self.max_version = max_version

    def build(self, request_struct_class: type[RequestStruct]) -> RequestStruct:
        by_topic: dict[str, list] = collections.defaultdict(list)
        for tp, offset in sorted(self.offsets.items()):
            by_topic[tp.topic].append((tp.partition, offset, NO_LEADER_EPOCH, "", {}))
        group = self.group
        return request_struct_class(
            self.transactional_id, group.group_id, self.producer_id, self.producer_epoch,
            group.generation_id, group.member_id, group.group_instance_id,
            [(topic, partitions, {}) for topic, partitions in by_topic.items()], {})


class OffsetFetchResponse_v7(Response):
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = flexible(
        ("throttle_time_ms", Int32),
        ("topics", compact_array(
            ("name", COMPACT_STRING),
            ("partitions", compact_array(
                ("partition_index", Int32),
                ("committed_offset", Int64),
                ("committed_leader_epoch", Int32),
                ("metadata", COMPACT_STRING),
                ("error_code", Int16),
            )),
        )),
        ("error_code", Int16),
    )


class OffsetFetchRequest_v7(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = flexible(
        ("group_id", COMPACT_STRING),
        ("topics", compact_array(("name", COMPACT_STRING),
                                 ("partition_indexes", CompactArray(Int32)))),
        ("require_stable", Boolean),
    )


class OffsetFetchRequest(BoundedRequest):
    """One group's committed offsets; with ``require_stable`` a partition whose offset a
    pending transaction may still change answers UNSTABLE_OFFSET_COMMIT instead."""

    API_KEY = 9
    _CLASSES = (OffsetFetchRequest_v7,)

    def __init__(self, group_id: str, partitions: list[TopicPartition],
                 require_stable: bool = True) -> None:
        self.group_id, self.partitions = group_id, partitions
        self.require_stable = require_stable

    def build(self, request_struct_class: type[RequestStruct]) -> RequestStruct:
        by_topic: dict[str, list[int]] = collections.defaultdict(list)
        for tp in sorted(self.partitions):
            by_topic[tp.topic].append(tp.partition)
        topics: list[tuple[str, list[int], dict]] = [
            (topic, indexes, {}) for topic, indexes in by_topic.items()]
        return request_struct_class(self.group_id, topics, self.require_stable, {})
