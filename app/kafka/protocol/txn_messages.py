"""Transactions v2 (KIP-890 part 2) messages, at the versions Kafka 4.4.0's Java client
sends: InitProducerId v5, Produce v12 (the last with topic names), EndTxn v5.

Under transactions v2 a Produce v12 adds its partitions to the transaction itself (no
AddPartitionsToTxn), and EndTxn v5 bumps the producer epoch after every transaction
and answers with the epoch (and a new producer id when the epoch would overflow).
"""

from __future__ import annotations

from aiokafka.protocol.api import RequestStruct, Response
from aiokafka.protocol.types import Boolean, CompactBytes, Int16, Int32, Int64

from app.kafka.protocol.versions import BoundedRequest
from app.kafka.protocol.wire import COMPACT_STRING, compact_array, flexible

NO_PRODUCER_ID, NO_PRODUCER_EPOCH = -1, -1


class InitProducerIdResponse_v5(Response):
    API_KEY = 22
    API_VERSION = 5
    SCHEMA = flexible(("throttle_time_ms", Int32), ("error_code", Int16),
                      ("producer_id", Int64), ("producer_epoch", Int16))


class InitProducerIdRequest_v5(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 22
    API_VERSION = 5
    RESPONSE_TYPE = InitProducerIdResponse_v5
    SCHEMA = flexible(("transactional_id", COMPACT_STRING), ("transaction_timeout_ms", Int32),
                      ("producer_id", Int64), ("producer_epoch", Int16))


class InitProducerIdRequest(BoundedRequest):
    """A producer id and epoch for a transactional id; with the current id and epoch
    given, the producer resumes after an epoch error instead of starting afresh."""

    API_KEY = 22
    _CLASSES = (InitProducerIdRequest_v5,)

    def __init__(self, transactional_id: str | None, transaction_timeout_ms: int,
                 producer_id: int = NO_PRODUCER_ID,
                 producer_epoch: int = NO_PRODUCER_EPOCH) -> None:
        self.values = (transactional_id, transaction_timeout_ms, producer_id, producer_epoch)

    def build(self, request_struct_class: type[RequestStruct]) -> RequestStruct:
        return request_struct_class(*self.values, {})


class EndTxnResponse_v5(Response):
    API_KEY = 26
    API_VERSION = 5
    SCHEMA = flexible(("throttle_time_ms", Int32), ("error_code", Int16),
                      ("producer_id", Int64), ("producer_epoch", Int16))


class EndTxnRequest_v5(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 26
    API_VERSION = 5
    RESPONSE_TYPE = EndTxnResponse_v5
    SCHEMA = flexible(("transactional_id", COMPACT_STRING), ("producer_id", Int64),
                      ("producer_epoch", Int16), ("committed", Boolean))


class EndTxnRequest(BoundedRequest):
    """Commit or abort; the response carries the producer's next id and epoch."""

    API_KEY = 26
    _CLASSES = (EndTxnRequest_v5,)

    def __init__(self, transactional_id: str, producer_id: int, producer_epoch: int,
                 committed: bool) -> None:
        self.values = (transactional_id, producer_id, producer_epoch, committed)

    def build(self, request_struct_class: type[RequestStruct]) -> RequestStruct:
        return request_struct_class(*self.values, {})


class ProduceResponse_v12(Response):
    API_KEY = 0
    API_VERSION = 12
    SCHEMA = flexible(
        ("responses", compact_array(
            ("name", COMPACT_STRING),
            ("partition_responses", compact_array(
                ("index", Int32),
                ("error_code", Int16),
                ("base_offset", Int64),
                ("log_append_time_ms", Int64),
                ("log_start_offset", Int64),
                ("record_errors", compact_array(
                    ("batch_index", Int32), ("batch_index_error_message", COMPACT_STRING))),
                ("error_message", COMPACT_STRING),
            )),  # tagged 0: the partition's current leader (KIP-951)
        )),
        ("throttle_time_ms", Int32),
    )  # tagged 0: endpoints of the leaders named above


class ProduceRequest_v12(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 0
    API_VERSION = 12
    RESPONSE_TYPE = ProduceResponse_v12
    SCHEMA = flexible(
        ("transactional_id", COMPACT_STRING),
        ("acks", Int16),
        ("timeout_ms", Int32),
        ("topic_data", compact_array(
            ("name", COMPACT_STRING),
            ("partition_data", compact_array(("index", Int32), ("records", CompactBytes))),
        )),
    )


class ProduceRequest(BoundedRequest):
    """Record batches for partitions; ``topics`` is [(topic, [(partition, batch bytes)])].
    Under transactions v2 the partitions join the transaction on the way."""

    API_KEY = 0
    _CLASSES = (ProduceRequest_v12,)

    def __init__(self, transactional_id: str | None, acks: int, timeout_ms: int,
                 topics: list[tuple[str, list[tuple[int, bytes]]]]) -> None:
        self.transactional_id, self.acks, self.timeout_ms = transactional_id, acks, timeout_ms
        self.topics = topics

    @property
    def required_acks(self) -> int:
        return self.acks  # the name aiokafka's produce handler reads

    def build(self, request_struct_class: type[RequestStruct]) -> RequestStruct:
        topic_data: list[tuple[str, list, dict]] = [
            (topic, [(index, records, {}) for index, records in partitions], {})
            for topic, partitions in self.topics]
        return request_struct_class(self.transactional_id, self.acks, self.timeout_ms,
                                    topic_data, {})
