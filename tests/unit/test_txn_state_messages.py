"""ListTransactions and DescribeTransactions against Kafka's own message definitions
(the kafka-clients jar; tests/unit/kafka_schema.py applies them), as the other
messages of the protocol layer are checked in test_protocol_messages.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.kafka.protocol.txn_state_messages import (
    DescribeTransactionsRequest,
    DescribeTransactionsResponse_v0,
    ListTransactionsRequest,
    ListTransactionsResponse_v0,
    ListTransactionsResponse_v1,
    ListTransactionsResponse_v2,
)
from tests.unit.kafka_schema import Message, load
from tests.unit.test_protocol_messages import KAFKA, assert_decodes_as_kafka, ours
from tools import local_kafka


@pytest.fixture(scope="module")
def jar() -> Path:
    return local_kafka.libs(KAFKA) / f"kafka-clients-{KAFKA}.jar"


REQUESTS = [
    *[("ListTransactionsRequest", v, ListTransactionsRequest(
        ["Ongoing", "PrepareAbort"], [4001, 9_007_199_254_740_993], 15_000,
        r"txn\-ü.*")) for v in (0, 1, 2)],
    ("ListTransactionsRequest", 2, ListTransactionsRequest()),
    ("DescribeTransactionsRequest", 0, DescribeTransactionsRequest(["txn-a-0", "txn-ü-12"])),
    ("DescribeTransactionsRequest", 0, DescribeTransactionsRequest([])),
]


@pytest.mark.parametrize("name, version, request_", REQUESTS,
                         ids=[f"{n}-v{v}-{i}" for i, (n, v, _) in enumerate(REQUESTS)])
def test_a_request_encodes_as_kafka_defines_it(jar, name, version, request_):
    struct = request_.prepare({request_.API_KEY: (0, version)})
    assert struct.API_VERSION == version
    raw = struct.encode()
    kafka = Message(load(jar, name), version)
    decoded = kafka.decode(raw)  # every byte read, none left over
    assert kafka.plain(decoded) == ours(struct)
    assert kafka.encode(decoded) == raw


def test_the_filters_a_version_lacks_are_left_out(jar):
    request = ListTransactionsRequest(["Ongoing"], [], 15_000, "txn-.*")
    v0 = Message(load(jar, "ListTransactionsRequest"), 0).decode(
        request.prepare({66: (0, 0)}).encode())
    v2 = Message(load(jar, "ListTransactionsRequest"), 2).decode(
        request.prepare({66: (0, 2)}).encode())
    assert "DurationFilter" not in v0 and "TransactionalIdPattern" not in v0
    assert v2["DurationFilter"] == 15_000 and v2["TransactionalIdPattern"] == "txn-.*"
    assert ListTransactionsRequest().prepare({66: (0, 2)}).transactional_id_pattern is None


LIST = {"ThrottleTimeMs": 0, "ErrorCode": 0, "UnknownStateFilters": ["Sleeping"],
        "TransactionStates": [
            {"TransactionalId": "g-pod-a-0", "ProducerId": 4001, "TransactionState": "Ongoing"},
            {"TransactionalId": "g-pod-ü-3", "ProducerId": 2**40, "TransactionState": "Empty"}]}
DESCRIBE = {"ThrottleTimeMs": 3, "TransactionStates": [
    {"ErrorCode": 0, "TransactionalId": "g-pod-a-0", "TransactionState": "Ongoing",
     "TransactionTimeoutMs": 120_000, "TransactionStartTimeMs": 1_796_000_000_123,
     "ProducerId": 4001, "ProducerEpoch": 7, "Topics": [
         {"Topic": "out", "Partitions": [0, 5]},
         {"Topic": "__consumer_offsets", "Partitions": [17]}]},
    {"ErrorCode": 105, "TransactionalId": "g-unknown", "TransactionState": "",
     "TransactionTimeoutMs": 0, "TransactionStartTimeMs": -1, "ProducerId": -1,
     "ProducerEpoch": -1, "Topics": []}]}
RESPONSES = [
    ("ListTransactionsResponse", 0, ListTransactionsResponse_v0, LIST),
    ("ListTransactionsResponse", 1, ListTransactionsResponse_v1, LIST),
    ("ListTransactionsResponse", 2, ListTransactionsResponse_v2, LIST),
    ("DescribeTransactionsResponse", 0, DescribeTransactionsResponse_v0, DESCRIBE),
]


@pytest.mark.parametrize("name, version, response_type, value", RESPONSES,
                         ids=[f"{n}-v{v}" for n, v, _, _ in RESPONSES])
def test_a_response_decodes_as_kafka_defines_it(jar, name, version, response_type, value):
    assert_decodes_as_kafka(jar, name, version, response_type, value)
