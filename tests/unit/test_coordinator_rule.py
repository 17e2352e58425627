"""Which failed FindCoordinator look-ups app/kafka/protocol/coordinator.py tries again.

aiokafka 0.14 wraps an error its look-up does not retry in a bare KafkaError whose
cause is the original (the broker tests in tests/integration/test_coordinator_failover.py
show the lost connection end to end)."""

from __future__ import annotations

import pytest
from aiokafka import errors as kafka

from app.kafka.protocol.coordinator import lost_look_up


def wrapped(cause: Exception) -> kafka.KafkaError:
    """As aiokafka's Sender._find_coordinator raises what it does not handle."""
    try:
        raise kafka.KafkaError(repr(cause)) from cause
    except kafka.KafkaError as exc:
        return exc


@pytest.mark.parametrize("cause", [
    kafka.KafkaConnectionError("Connection at 127.0.0.1:9092 closed"),
    kafka.CoordinatorLoadInProgressError(),
    kafka.NotCoordinatorError(),
])
def test_a_look_up_that_met_a_retriable_error_is_tried_again(cause: Exception) -> None:
    assert lost_look_up(wrapped(cause))


@pytest.mark.parametrize("error", [
    wrapped(kafka.UnsupportedVersionError()),           # not retriable: final
    wrapped(ValueError("not a Kafka error")),
    kafka.TransactionalIdAuthorizationFailed("txn"),    # raised as itself, not wrapped
    kafka.GroupAuthorizationFailedError("group"),
    kafka.KafkaError("no cause"),
])
def test_any_other_failed_look_up_is_final(error: kafka.KafkaError) -> None:
    assert not lost_look_up(error)
