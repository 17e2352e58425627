from __future__ import annotations

import pytest
from aiokafka import errors as kafka

from app.errors import Kind, PoisonError, TransientError, classify


@pytest.mark.parametrize("exc, kind", [
    (PoisonError("invalid_json", "x"), Kind.POISON),
    (TransientError("http_transient", "503"), Kind.TRANSIENT),
    (kafka.ProducerFenced(), Kind.FENCED),
    (kafka.InvalidProducerEpoch(), Kind.FENCED),
    (kafka.TopicAuthorizationFailedError(), Kind.UNAUTHORIZED),
    (kafka.TransactionalIdAuthorizationFailed(), Kind.UNAUTHORIZED),
    (kafka.GroupAuthorizationFailedError(), Kind.UNAUTHORIZED),
    (kafka.MessageSizeTooLargeError(), Kind.POISON),
    (kafka.KafkaConnectionError(), Kind.TRANSIENT),
    (kafka.KafkaTimeoutError(), Kind.TRANSIENT),
    (kafka.NotLeaderForPartitionError(), Kind.TRANSIENT),
    (kafka.ConcurrentTransactions(), Kind.TRANSIENT),
    (TimeoutError(), Kind.TRANSIENT),
    (kafka.IllegalStateError(), Kind.FATAL),
    (RuntimeError("bug"), Kind.FATAL),
])
def test_classify(exc, kind):
    assert classify(exc) is kind
