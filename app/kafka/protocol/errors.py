"""Broker error codes aiokafka 0.14 has no class for, beside its own.

aiokafka maps every unknown code to ``UnknownError``, and its transaction handlers
raise on one, which ends the producer's sender task; this layer's handlers look codes
up here instead. aiokafka's own table is left as it is.
"""

from __future__ import annotations

from aiokafka import errors as kafka


class FencedInstanceIdError(kafka.BrokerResponseError):
    errno = 82
    message = "FENCED_INSTANCE_ID"
    description = "Another consumer with the same group.instance.id has joined the group."


class UnstableOffsetCommitError(kafka.BrokerResponseError):
    errno = 88
    message = "UNSTABLE_OFFSET_COMMIT"
    description = "A pending transaction may still change this partition's committed offset."
    retriable = True


class ProducerFencedError(kafka.BrokerResponseError):
    errno = 90
    message = "PRODUCER_FENCED"
    description = "A newer producer with the same transactional id has fenced this one."


class TransactionAbortableError(kafka.BrokerResponseError):
    errno = 120
    message = "TRANSACTION_ABORTABLE"
    description = "The transaction hit an error it cannot commit past: abort it and retry."


class NotAGroupMemberError(kafka.KafkaError):
    """The consumer holds no generation (it left or was removed): its offsets would not
    be checked against the group, so they are not sent at all."""


_OURS: dict[int, type[kafka.BrokerResponseError]] = {
    error.errno: error for error in (FencedInstanceIdError, UnstableOffsetCommitError,
                                     ProducerFencedError, TransactionAbortableError)}

# The consumer lost its place in the group: its transaction must abort (KIP-447).
GROUP_FENCING = (kafka.IllegalGenerationError, kafka.UnknownMemberIdError,
                 FencedInstanceIdError, NotAGroupMemberError)


def for_code(code: int) -> type[kafka.BrokerResponseError]:
    """The error class for a code: aiokafka's, else this module's, else UnknownError."""
    known = kafka.for_code(code)
    if known is kafka.UnknownError:
        return _OURS.get(code, kafka.UnknownError)
    return known
