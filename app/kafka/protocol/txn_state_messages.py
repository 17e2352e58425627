"""What the transaction coordinators hold: ListTransactions (v0-v2, KIP-664) and
DescribeTransactions (v0), which aiokafka 0.14 lacks.

Each broker answers ListTransactions for the transactional ids it coordinates, so a
whole cluster's list takes one request per broker. Field names follow Kafka's JSON
message definitions (snake_case); the unit tests check them against those definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka.protocol.api import RequestStruct, Response
from aiokafka.protocol.types import CompactArray, Int16, Int32, Int64

from app.kafka.protocol.versions import BoundedRequest
from app.kafka.protocol.wire import COMPACT_STRING, compact_array, flexible

ONGOING = "Ongoing"  # a transaction begun and not yet ending (Kafka's TransactionState)


class ListTransactionsResponse_v0(Response):
    API_KEY = 66
    API_VERSION = 0
    SCHEMA = flexible(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("unknown_state_filters", CompactArray(COMPACT_STRING)),
        ("transaction_states", compact_array(
            ("transactional_id", COMPACT_STRING),
            ("producer_id", Int64),
            ("transaction_state", COMPACT_STRING),
        )),
    )


class ListTransactionsResponse_v1(ListTransactionsResponse_v0):
    API_VERSION = 1


class ListTransactionsResponse_v2(ListTransactionsResponse_v0):
    API_VERSION = 2


class ListTransactionsRequest_v0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 66
    API_VERSION = 0
    RESPONSE_TYPE = ListTransactionsResponse_v0
    SCHEMA = flexible(("state_filters", CompactArray(COMPACT_STRING)),
                      ("producer_id_filters", CompactArray(Int64)))


class ListTransactionsRequest_v1(ListTransactionsRequest_v0):
    API_VERSION = 1
    RESPONSE_TYPE = ListTransactionsResponse_v1
    SCHEMA = flexible(("state_filters", CompactArray(COMPACT_STRING)),
                      ("producer_id_filters", CompactArray(Int64)),
                      ("duration_filter", Int64))


class ListTransactionsRequest_v2(ListTransactionsRequest_v0):
    API_VERSION = 2
    RESPONSE_TYPE = ListTransactionsResponse_v2
    SCHEMA = flexible(("state_filters", CompactArray(COMPACT_STRING)),
                      ("producer_id_filters", CompactArray(Int64)),
                      ("duration_filter", Int64),
                      ("transactional_id_pattern", COMPACT_STRING))


class ListTransactionsRequest(BoundedRequest):
    """The transactions a broker coordinates, in ``states`` (all if empty).

    The duration filter (v1+) and the id pattern (v2+, a Java regular expression) are
    left out where the broker does not take them: they narrow the answer, so a caller
    that needs them filters the answer itself as well."""

    API_KEY = 66
    _CLASSES = (ListTransactionsRequest_v0, ListTransactionsRequest_v1,
                ListTransactionsRequest_v2)

    def __init__(self, states: Sequence[str] = (), producer_ids: Sequence[int] = (),
                 longer_than_ms: int = -1, id_pattern: str | None = None) -> None:
        self.states, self.producer_ids = list(states), list(producer_ids)
        self.longer_than_ms, self.id_pattern = longer_than_ms, id_pattern

    def build(self, request_struct_class: type[RequestStruct]) -> RequestStruct:
        values: list = [self.states, self.producer_ids]
        if request_struct_class.API_VERSION >= 1:
            values.append(self.longer_than_ms)
        if request_struct_class.API_VERSION >= 2:
            values.append(self.id_pattern)
        return request_struct_class(*values, {})


class DescribeTransactionsResponse_v0(Response):
    API_KEY = 65
    API_VERSION = 0
    SCHEMA = flexible(
        ("throttle_time_ms", Int32),
        ("transaction_states", compact_array(
            ("error_code", Int16),
            ("transactional_id", COMPACT_STRING),
            ("transaction_state", COMPACT_STRING),
            ("transaction_timeout_ms", Int32),
            ("transaction_start_time_ms", Int64),
            ("producer_id", Int64),
            ("producer_epoch", Int16),
            ("topics", compact_array(("topic", COMPACT_STRING),
                                     ("partitions", CompactArray(Int32)))),
        )),
    )


class DescribeTransactionsRequest_v0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 65
    API_VERSION = 0
    RESPONSE_TYPE = DescribeTransactionsResponse_v0
    SCHEMA = flexible(("transactional_ids", CompactArray(COMPACT_STRING)))


class DescribeTransactionsRequest(BoundedRequest):
    """State, producer, start time and partitions of transactional ids, asked of the
    broker that coordinates them."""

    API_KEY = 65
    _CLASSES = (DescribeTransactionsRequest_v0,)

    def __init__(self, transactional_ids: Sequence[str]) -> None:
        self.transactional_ids = list(transactional_ids)

    def build(self, request_struct_class: type[RequestStruct]) -> RequestStruct:
        return request_struct_class(self.transactional_ids, {})
