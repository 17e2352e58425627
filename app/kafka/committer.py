"""The commit path: one input partition's outputs and offset, written under one guarantee.

A committer runs the whole protocol for one commit and reports how it ended; it
never retries, logs or counts. What to do next is the partition task's decision:

    DONE     outputs and offset are committed
    RETRY    nothing of it is visible (the transaction was aborted, or at least once:
             the offset was not committed): the same records may be tried again
    FENCED   another producer owns this partition's transactional id, or the group
             refused the offsets (KIP-447: this consumer lost its membership): drop the task
    TIMED_OUT  fenced after the transaction outlived TRANSACTION_TIMEOUT_MS: the
             coordinator aborted it (a record too big to commit in time, or a stall)
    UNKNOWN  the commit was sent and its answer lost: it may have been applied, so
             never abort it; a new producer's init settles it, the committed offset tells
    FATAL    the producer is unusable: replace it and resume from the committed offset
    UNAUTHORIZED  the broker refused a topic, the group or the transactional id (ACLs):
             nothing of it is visible; a setting to fix, not the record's fault

A transactional commit is bounded by TRANSACTION_TIMEOUT_MS: aiokafka retries EndTxn and
transactional batches without limit, and past that time the coordinator has aborted the
transaction anyway. A commit still running then ends TIMED_OUT (its EndTxn not yet sent:
it will be aborted) or UNKNOWN (EndTxn sent, its answer lost).

``make_committer`` picks the implementation for ``PROCESSING_GUARANTEE`` once, at start.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from app.config import Settings
from app.errors import Kind, classify
from app.files.records import Output
from app.kafka.batches import send_all
from app.kafka.protocol.errors import GROUP_FENCING, TransactionAbortableError

Offsets = Mapping[TopicPartition, int]


class Outcome(enum.Enum):
    DONE = "done"
    RETRY = "retry"
    FENCED = "fenced"
    TIMED_OUT = "timed_out"
    UNKNOWN = "unknown"
    FATAL = "fatal"
    UNAUTHORIZED = "unauthorized"


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    cause: BaseException | None = None
    aborted: bool = False  # a transaction was rolled back (exactly once only)

    @property
    def refused(self) -> bool:
        """The broker refused an output record (too large): retrying cannot help."""
        return self.cause is not None and classify(self.cause) is Kind.POISON


DONE = Result(Outcome.DONE)


class Committer(Protocol):
    async def commit(self, producer: AIOKafkaProducer, offsets: Offsets,
                     records: Sequence[Output]) -> Result: ...


class ExactlyOnceCommitter:
    """begin, every send checked, send_offsets_to_transaction, commit; abort on failure."""

    transactional = True

    def __init__(self, group_id: str, transaction_timeout_s: float = float("inf"),
                 offsets_first: bool = False) -> None:
        self.group_id = group_id
        self.transaction_timeout_s = transaction_timeout_s
        self.offsets_first = offsets_first  # transactions v2 (app/kafka/protocol/txn_v2.py)

    async def commit(self, producer: AIOKafkaProducer, offsets: Offsets,
                     records: Sequence[Output]) -> Result:
        started, ending = time.monotonic(), _Ending()
        bound = self.transaction_timeout_s if self.transaction_timeout_s < float("inf") else None
        try:
            async with asyncio.timeout(bound):
                result = await self._commit(producer, offsets, records, ending)
        except TimeoutError:
            hung = TimeoutError(f"the commit did not finish within the transaction timeout "
                                f"({self.transaction_timeout_s:.0f}s)")
            return Result(Outcome.UNKNOWN if ending.sent else Outcome.TIMED_OUT, hung)
        if (result.outcome is Outcome.FENCED
                and time.monotonic() - started >= self.transaction_timeout_s):
            return Result(Outcome.TIMED_OUT, result.cause)
        return result

    async def _commit(self, producer: AIOKafkaProducer, offsets: Offsets,
                      records: Sequence[Output], ending: _Ending) -> Result:
        send_offsets = functools.partial(
            producer.send_offsets_to_transaction, dict(offsets), self.group_id)
        try:
            await producer.begin_transaction()
            if self.offsets_first:
                await send_offsets()
                await send_all(producer, records)
            else:
                # The offsets join the transaction while its records are in flight (one
                # round trip less); nothing commits before every send's result is checked.
                await send_all(producer, records, meanwhile=send_offsets)
        except Exception as exc:
            return await _abort(producer, exc)
        ending.sent = True
        try:
            await producer.commit_transaction()
        except Exception as exc:
            kind = classify(exc)
            if kind is Kind.FENCED or kind is Kind.UNAUTHORIZED:
                return Result(Outcome(kind.value), exc)
            return Result(Outcome.UNKNOWN, exc)
        return DONE


class _Ending:
    """Whether a commit got as far as sending EndTxn: then its outcome is unknown."""

    sent = False


async def _abort(producer: AIOKafkaProducer, cause: BaseException) -> Result:
    kind = classify(cause)
    # KIP-447: the group refused the offsets of a consumer that lost its membership.
    # The producer still works: abort, so nothing of it waits for the timeout.
    group_fenced = isinstance(cause, GROUP_FENCING)
    abortable = group_fenced or isinstance(cause, TransactionAbortableError)
    if kind in (Kind.FENCED, Kind.UNAUTHORIZED) or (kind is Kind.FATAL and not abortable):
        return Result(Outcome(kind.value), cause)  # a new producer settles it
    try:
        await producer.abort_transaction()
    except Exception as exc:
        fenced = classify(exc) is Kind.FENCED
        return Result(Outcome.FENCED if fenced else Outcome.FATAL, exc)
    return Result(Outcome.FENCED if group_fenced else Outcome.RETRY, cause, aborted=True)


class AtLeastOnceCommitter:
    """The outputs, then the consumer's offset commit: a crash between them repeats outputs.

    A baseline for benchmarks, not the product's guarantee."""

    transactional = False

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer

    async def commit(self, producer: AIOKafkaProducer, offsets: Offsets,
                     records: Sequence[Output]) -> Result:
        try:
            await send_all(producer, records)
            await self.consumer.commit(dict(offsets))
        except Exception as exc:
            kind = classify(exc)
            if kind in (Kind.FENCED, Kind.FATAL, Kind.UNAUTHORIZED):
                return Result(Outcome(kind.value), exc)
            return Result(Outcome.RETRY, exc)
        return DONE


def make_committer(settings: Settings, consumer: AIOKafkaConsumer, offsets_first: bool = False
                   ) -> ExactlyOnceCommitter | AtLeastOnceCommitter:
    """``offsets_first``: each transaction's offsets go before its records (transactions v2)."""
    if settings.processing_guarantee == "exactly_once":
        return ExactlyOnceCommitter(settings.group_id, settings.transaction_timeout_ms / 1000,
                                    offsets_first)
    return AtLeastOnceCommitter(consumer)
