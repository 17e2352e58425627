"""Every error the pipeline meets, sorted into what to do about it.

- TRANSIENT: try the same record again after a backoff (bounded for downloads).
- POISON:    the record can never succeed; dead-letter it now.
- FENCED:    another producer owns this partition's transactional id; drop the
             task and let the rebalance (or a later restart) decide.
- FATAL:     this producer is unusable or the outcome is unknown; recreate it
             and resume from the committed offset.
- UNAUTHORIZED: the broker refuses this service a topic, the group or the
             transactional id: a setting to fix (ACLs), not a record's fault; the
             partition waits and tries again now and then, with one log line.
"""

from __future__ import annotations

import asyncio
import enum
import random

from aiokafka import errors as kafka


class Kind(enum.Enum):
    TRANSIENT = "transient"
    POISON = "poison"
    FENCED = "fenced"
    FATAL = "fatal"
    UNAUTHORIZED = "unauthorized"


class IngestError(Exception):
    """An error about one input record, with a stable ``reason`` code for the DLQ."""

    kind = Kind.POISON

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class PoisonError(IngestError):
    """Permanent: the same input will fail the same way every time."""

    kind = Kind.POISON


class TransientError(IngestError):
    """May succeed if tried again (network, 5xx, timeouts, truncated bodies)."""

    kind = Kind.TRANSIENT


class TaskFenced(Exception):
    """Another producer took this partition's transactional id."""


class TaskFailed(Exception):
    """The producer is unusable or a commit's outcome is unknown: start afresh."""


class TaskUnauthorized(TaskFailed):
    """The broker refused a topic, the group or the transactional id (ACLs)."""


class ConfigError(Exception):
    """A setting is invalid; the service refuses to start."""


_FENCED = (
    kafka.ProducerFenced,
    kafka.InvalidProducerEpoch,
)
_UNAUTHORIZED = (
    kafka.TopicAuthorizationFailedError,
    kafka.GroupAuthorizationFailedError,
    kafka.TransactionalIdAuthorizationFailed,
    kafka.ClusterAuthorizationFailedError,
)
_POISON_KAFKA = (
    kafka.MessageSizeTooLargeError,
    kafka.RecordTooLargeError,
    kafka.CorruptRecordException,
)


def classify(exc: BaseException) -> Kind:
    """Sort an exception raised while preparing or committing a record."""
    if isinstance(exc, IngestError):
        return exc.kind
    if isinstance(exc, _FENCED):
        return Kind.FENCED
    if isinstance(exc, _UNAUTHORIZED):
        return Kind.UNAUTHORIZED
    if isinstance(exc, _POISON_KAFKA):
        return Kind.POISON
    if isinstance(exc, (kafka.KafkaConnectionError, kafka.KafkaTimeoutError,
                        kafka.ConcurrentTransactions, asyncio.TimeoutError, ConnectionError)):
        return Kind.TRANSIENT
    if isinstance(exc, kafka.KafkaError) and exc.retriable:
        return Kind.TRANSIENT
    return Kind.FATAL


def backoff(attempt: int, first: float, longest: float) -> float:
    """Exponential with full jitter: spreads retries of many partitions apart."""
    return random.uniform(0.5, 1.0) * min(longest, first * 2 ** (attempt - 1))
