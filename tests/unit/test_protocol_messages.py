"""The protocol layer's requests and responses against Kafka's own message definitions.

Kafka's JSON definitions come from the kafka-clients jar Maven brings for the broker
(tools/local_kafka.py); tests/unit/kafka_schema.py applies them. A request must
encode to bytes Kafka reads back as the same values, with nothing left over; a
response Kafka encodes must decode to the same values and encode back to the same
bytes.
"""

from __future__ import annotations

import subprocess
import sys
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from aiokafka.protocol.types import TaggedFields as AiokafkaTaggedFields
from aiokafka.structs import TopicPartition

from app.kafka.protocol.api_versions import (
    ApiVersionsRequest,
    ApiVersionsResponse_v3,
    ApiVersionsResponse_v4,
    broker_features,
)
from app.kafka.protocol.offset_messages import (
    GroupMetadata,
    OffsetFetchRequest,
    OffsetFetchResponse_v7,
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse_v3,
    TxnOffsetCommitResponse_v4,
    TxnOffsetCommitResponse_v5,
)
from app.kafka.protocol.txn_messages import (
    EndTxnRequest,
    EndTxnResponse_v5,
    InitProducerIdRequest,
    InitProducerIdResponse_v5,
    ProduceRequest,
    ProduceResponse_v12,
)
from app.kafka.protocol.wire import TaggedFields
from tests.unit.kafka_schema import Message, load
from tools import local_kafka

KAFKA = "4.4.0"  # the Java client the layer's versions follow


@pytest.fixture(scope="module")
def jar() -> Path:
    return local_kafka.libs(KAFKA) / f"kafka-clients-{KAFKA}.jar"


def ours(struct: Any) -> dict:
    """A struct's values by field name, its raw tagged fields left out."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "tags"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(struct.to_object())


TP = TopicPartition
GROUP = GroupMetadata("group-1", 7, "member-1-4f2a", "pod-3")
OFFSETS = {TP("in", 2): 40, TP("in", 0): 17, TP("other", 5): 9}
REQUESTS = [
    *[("TxnOffsetCommitRequest", v, TxnOffsetCommitRequest(
        "txn-ü", 4001, 12, GROUP, OFFSETS, max_version=v)) for v in (3, 4, 5)],
    ("TxnOffsetCommitRequest", 3, TxnOffsetCommitRequest(
        "txn", 1, 0, GroupMetadata("g", -1, "", None), {TP("t", 0): 0}, max_version=3)),
    ("OffsetFetchRequest", 7, OffsetFetchRequest("group-1", list(OFFSETS))),
    ("OffsetFetchRequest", 7, OffsetFetchRequest("g", [TP("t", 1)], require_stable=False)),
    *[("ApiVersionsRequest", v, ApiVersionsRequest()) for v in (3, 4)],
    ("InitProducerIdRequest", 5, InitProducerIdRequest("txn-1", 60_000)),
    ("InitProducerIdRequest", 5, InitProducerIdRequest("txn-1", 10_000, 4001, 32766)),
    ("InitProducerIdRequest", 5, InitProducerIdRequest(None, 10_000)),
    ("EndTxnRequest", 5, EndTxnRequest("txn-1", 4001, 3, True)),
    ("EndTxnRequest", 5, EndTxnRequest("txn-1", 4001, 4, False)),
    ("ProduceRequest", 12, ProduceRequest("txn-1", -1, 30_000, [
        ("out", [(0, b"\x00batch-0"), (3, b"")]), ("dlq", [(1, b"\x01" * 300)])])),
]


@pytest.mark.parametrize("name, version, request_", REQUESTS,
                         ids=[f"{n}-v{v}" for n, v, _ in REQUESTS])
def test_a_request_encodes_as_kafka_defines_it(jar, name, version, request_):
    struct = request_.prepare({request_.API_KEY: (0, version)})
    assert struct.API_VERSION == version
    raw = struct.encode()
    kafka = Message(load(jar, name), version)
    decoded = kafka.decode(raw)  # every byte read, none left over
    assert kafka.plain(decoded) == ours(struct)
    assert kafka.encode(decoded) == raw


PARTITIONS = [{"PartitionIndex": 0, "ErrorCode": 0}, {"PartitionIndex": 2, "ErrorCode": 22}]
TXN_OFFSET_COMMIT = {"ThrottleTimeMs": 5, "Topics": [
    {"Name": "in", "Partitions": PARTITIONS}, {"Name": "other", "Partitions": []}]}
OFFSET_FETCH = {"ThrottleTimeMs": 0, "ErrorCode": 0, "Topics": [{"Name": "in", "Partitions": [
    {"PartitionIndex": 0, "CommittedOffset": 17, "CommittedLeaderEpoch": 3,
     "Metadata": "", "ErrorCode": 0},
    {"PartitionIndex": 2, "CommittedOffset": -1, "CommittedLeaderEpoch": -1,
     "Metadata": None, "ErrorCode": 88}]}]}
API_VERSIONS = {
    "ErrorCode": 0, "ThrottleTimeMs": 0,
    "ApiKeys": [{"ApiKey": 0, "MinVersion": 3, "MaxVersion": 13},
                {"ApiKey": 28, "MinVersion": 0, "MaxVersion": 6}],
    "SupportedFeatures": [{"Name": "transaction.version", "MinVersion": 0, "MaxVersion": 2},
                          {"Name": "group.version", "MinVersion": 0, "MaxVersion": 1}],
    "FinalizedFeaturesEpoch": 123456789012,
    "FinalizedFeatures": [{"Name": "transaction.version", "MaxVersionLevel": 2,
                           "MinVersionLevel": 1}],
    "ZkMigrationReady": True,
}
PRODUCE = {"ThrottleTimeMs": 1, "Responses": [{"Name": "out", "PartitionResponses": [
    {"Index": 0, "ErrorCode": 0, "BaseOffset": 1234, "LogAppendTimeMs": -1,
     "LogStartOffset": 0, "RecordErrors": [], "ErrorMessage": None},
    {"Index": 3, "ErrorCode": 10, "BaseOffset": -1, "LogAppendTimeMs": -1,
     "LogStartOffset": -1, "RecordErrors": [{"BatchIndex": 2,
                                             "BatchIndexErrorMessage": "too big"}],
     "ErrorMessage": "MESSAGE_TOO_LARGE", "CurrentLeader": {"LeaderId": 2, "LeaderEpoch": 9}},
]}], "NodeEndpoints": [{"NodeId": 2, "Host": "kafka-2", "Port": 9092, "Rack": None}]}
RESPONSES = [
    ("TxnOffsetCommitResponse", 3, TxnOffsetCommitResponse_v3, TXN_OFFSET_COMMIT),
    ("TxnOffsetCommitResponse", 4, TxnOffsetCommitResponse_v4, TXN_OFFSET_COMMIT),
    ("TxnOffsetCommitResponse", 5, TxnOffsetCommitResponse_v5, TXN_OFFSET_COMMIT),
    ("OffsetFetchResponse", 7, OffsetFetchResponse_v7, OFFSET_FETCH),
    ("ApiVersionsResponse", 3, ApiVersionsResponse_v3, API_VERSIONS),
    ("ApiVersionsResponse", 4, ApiVersionsResponse_v4, API_VERSIONS),
    ("InitProducerIdResponse", 5, InitProducerIdResponse_v5,
     {"ThrottleTimeMs": 0, "ErrorCode": 0, "ProducerId": 4001, "ProducerEpoch": 0}),
    ("EndTxnResponse", 5, EndTxnResponse_v5,
     {"ThrottleTimeMs": 0, "ErrorCode": 0, "ProducerId": 4002, "ProducerEpoch": 0}),
    ("ProduceResponse", 12, ProduceResponse_v12, PRODUCE),
]


@pytest.mark.parametrize("name, version, response_type, value", RESPONSES,
                         ids=[f"{n}-v{v}" for n, v, _, _ in RESPONSES])
def test_a_response_decodes_as_kafka_defines_it(jar, name, version, response_type, value):
    assert_decodes_as_kafka(jar, name, version, response_type, value)


def assert_decodes_as_kafka(jar, name: str, version: int, response_type: Any,
                            value: dict) -> None:
    """Kafka's encoding of ``value`` decodes to the same fields, and encodes back to the
    same bytes (tagged fields included, written back as read)."""
    kafka = Message(load(jar, name), version)
    raw = kafka.encode(value)
    buffer = BytesIO(raw)
    response = response_type.decode(buffer)
    assert buffer.read() == b""
    assert ours(response) == kafka.plain(kafka.decode(raw))
    assert response.encode() == raw


def test_the_features_are_read_from_the_tagged_fields(jar):
    raw = Message(load(jar, "ApiVersionsResponse"), 3).encode(API_VERSIONS)
    features = broker_features(ApiVersionsResponse_v3.decode(raw))
    assert features.api_versions == {0: (3, 13), 28: (0, 6)}
    assert features.finalized == {"transaction.version": (1, 2)}
    assert features.supported == {"transaction.version": (0, 2), "group.version": (0, 1)}
    assert features.finalized_epoch == 123456789012
    assert features.level("transaction.version") == 2 and features.level("x") == 0


def test_tagged_fields_are_written_as_kafka_reads_them(jar):
    kafka = Message(load(jar, "ApiVersionsResponse"), 3)
    raw = kafka.encode(API_VERSIONS)
    tags = ApiVersionsResponse_v3.decode(raw).tags
    assert sorted(tags) == [0, 1, 2, 3]
    assert raw.endswith(TaggedFields.encode(tags))
    assert TaggedFields.decode(BytesIO(TaggedFields.encode(tags))) == tags
    # aiokafka 0.14's own encoder leaves out each field's size, and refuses tag 0: the
    # reason the layer has its own.
    without_tag_0 = {tag: data for tag, data in tags.items() if tag}
    assert AiokafkaTaggedFields.encode(without_tag_0) != TaggedFields.encode(without_tag_0)
    with pytest.raises(AssertionError):
        AiokafkaTaggedFields.encode(tags)


def test_the_layer_refuses_to_import_beside_another_aiokafka():
    script = ("import aiokafka; aiokafka.__version__ = '0.15.0'\n"
              "import app.kafka.protocol")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 1
    assert ("ImportError: app.kafka.protocol extends aiokafka 0.14.0 exactly, but aiokafka "
            "0.15.0 is installed") in run.stderr
