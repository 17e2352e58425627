"""One input record, committed: the rules around the committer for a partition task.

Retry an aborted transaction after a backoff; turn a record the broker refuses, or one
whose transaction keeps timing out, into a dead letter; end the task on fencing, an
unknown outcome or a broken producer; with deduplication, write the store's changelog
entry in the same transaction, or for a repeat only the offset. The offset a
transaction commits is the task's to choose (``offset_after``: past transaction
markers when nothing follows, see app/task/partition.py); ``commit_position`` commits an
offset alone.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition

from app.dedup.store import Deduplicator
from app.errors import PoisonError, TaskFailed, TaskFenced, TaskUnauthorized, backoff
from app.files.records import Output, Prepared
from app.kafka.committer import Outcome, Result
from app.task.chunks import Chunks, Write
from app.task.context import TaskContext

log = logging.getLogger(__name__)


class Owner(Protocol):
    """What a record committer needs of the partition task that owns it."""

    tp: TopicPartition
    context: TaskContext
    dedup: Deduplicator | None
    chunks: Chunks | None  # FILE_CHUNK_RECORDS: spooled files in chunks (app/task/chunks.py)
    log_context: dict[str, Any]

    @property
    def producer(self) -> AIOKafkaProducer | None: ...

    @property
    def running(self) -> bool: ...

    async def offset_after(self, record: ConsumerRecord) -> int: ...


class RecordCommitter:
    def __init__(self, owner: Owner) -> None:
        self.owner, self.tp, self.context, self.dedup = owner, owner.tp, owner.context, owner.dedup
        self.chunks = owner.chunks
        self.settings, self.stats = self.context.settings, self.context.stats
        self._log_context = owner.log_context
        self.committed_offset = -1  # the input offset the last successful commit wrote
        self.open_since: float | None = None  # when the commit in progress began

    @property
    def running(self) -> bool:
        return self.owner.running

    async def commit(self, record: ConsumerRecord, prepared: Prepared) -> bool:
        """Commit the record's outputs and offset, retrying; False if closed meanwhile."""
        prepared = await self._checked(record, prepared)
        if self.chunks is not None and self._chunked(record, prepared):
            return await self.chunks.commit(self, record, prepared)
        committed = await self.attempts(record, prepared, self.whole)
        if committed is not None:
            self.done(record, committed)
        return committed is not None

    async def whole(self, record: ConsumerRecord, prepared: Prepared) -> Result:
        """The record's transaction: its outputs (or dead letter), and its offset."""
        return await self._transaction([(record, prepared)])

    async def attempts(self, record: ConsumerRecord, prepared: Prepared,
                       write: Write) -> Prepared | None:
        """``write`` the record's transaction until it commits, retrying: what committed
        (a dead letter if an output was refused), or None if closed meanwhile."""
        key, attempt = (self.tp, record.offset), 0
        while True:
            attempt += 1
            started = time.monotonic()
            result = await write(record, prepared)
            if result.outcome is Outcome.DONE:
                self.stats.commit_seconds.observe(time.monotonic() - started)
                self.stats.transaction_committed()
                self.context.timeouts.pop(key, None)
                return prepared
            self._give_up_if_final(result, key)
            if result.aborted:
                self.stats.aborted()
                log.warning("transaction aborted, will retry: %r", result.cause,
                            extra={**self._log_context, "event": "aborted"})
            if result.refused and not prepared.dead_lettered:
                prepared = self._refused(record, prepared, result.cause)
                continue
            if not self.owner.running:
                return None
            self.stats.retried("transaction")
            await self.context.sleep(backoff(attempt, self.settings.retry_backoff_s,
                                             self.settings.retry_backoff_max_s))

    async def commit_group(self, group: list[tuple[ConsumerRecord, Prepared]]) -> int:
        """Records ready at the head of the window, in one transaction (up to
        TRANSACTION_MAX_RECORDS); how many of them were committed (0: closed meanwhile).
        If the group fails they are committed one per transaction, so one bad record
        never takes its neighbours to the dead-letter topic."""
        group = self._groupable(group)
        if len(group) == 1:
            return int(await self.commit(*group[0]))
        group = [(record, await self._checked(record, prepared)) for record, prepared in group]
        started = time.monotonic()
        result = await self._transaction(group)
        if result.outcome is Outcome.DONE:
            self.stats.commit_seconds.observe(time.monotonic() - started)
            self.stats.transaction_committed()
            for record, prepared in group:
                self.done(record, prepared)
            return len(group)
        self.context.singles_until[self.tp] = group[-1][0].offset  # also for the next task
        self._give_up_if_final(result, None)
        if result.aborted:
            self.stats.aborted()
            log.warning("group of %d aborted, committing them one by one: %r", len(group),
                        result.cause, extra={**self._log_context, "event": "aborted"})
        for done, (record, prepared) in enumerate(group):
            if not await self.commit(record, prepared):
                return done
        return len(group)

    def _groupable(self, group: list[tuple[ConsumerRecord, Prepared]]
                   ) -> list[tuple[ConsumerRecord, Prepared]]:
        """The group cut before a record that must go alone: one after a failed group,
        or one repeating a key earlier in the group (not yet remembered)."""
        kept: list[tuple[ConsumerRecord, Prepared]] = []
        keys: set[bytes | None] = set()
        for record, prepared in group:
            alone = (record.offset <= self.context.singles_until.get(self.tp, -1)
                     or self._chunked(record, prepared))
            if kept and (alone or (prepared.dedup_key is not None
                                   and prepared.dedup_key in keys)):
                break
            kept.append((record, prepared))
            keys.add(prepared.dedup_key)
            if alone:
                break
        return kept

    def _chunked(self, record: ConsumerRecord, prepared: Prepared) -> bool:
        """FILE_CHUNK_RECORDS applies (app/task/chunks.py); never to a repeat (DEDUP),
        which writes no outputs."""
        if self.chunks is None or (self.dedup is not None
                                   and self.dedup.duplicate_of(prepared) is not None):
            return False
        return self.chunks.applies(record, prepared)

    async def commit_position(self, offset: int) -> bool:
        """The input offset alone, past records the consumer skipped (transaction markers,
        aborted records): a transaction with no outputs. False if it was not committed
        (the task tries again when next woken); fencing and failures end the task."""
        result = await self.write(offset, [])
        if result.outcome is Outcome.DONE:
            log.info("committed offset %d, past records the consumer skipped", offset,
                     extra={**self._log_context, "event": "position_committed",
                            "offset": offset})
            return True
        self._give_up_if_final(result, None)
        if result.aborted:
            self.stats.aborted()
        log.warning("could not commit offset %d alone, will retry: %r", offset, result.cause,
                    extra={**self._log_context, "event": "aborted"})
        return False

    async def _transaction(self, group: list[tuple[ConsumerRecord, Prepared]]) -> Result:
        records: list[Output] = [*self.dedup.tombstones()] if self.dedup else []
        for record, prepared in group:
            records += self.dedup.records(record, prepared) if self.dedup else prepared.records
        return await self.write(await self.owner.offset_after(group[-1][0]), records)

    async def write(self, offset: int, records: list[Output]) -> Result:
        """One transaction: ``records`` and the input offset ``offset``."""
        self.open_since = time.monotonic()
        try:
            result = await self.context.committer.commit(self.owner.producer,  # type: ignore[arg-type]
                                                         {self.tp: offset}, records)
        finally:
            self.open_since = None
        if result.outcome is Outcome.DONE:
            self.committed_offset = offset
        else:
            self.stats.commit_failed(result.outcome.value)
        return result

    async def _checked(self, record: ConsumerRecord, prepared: Prepared) -> Prepared:
        timeouts = self.context.timeouts[self.tp, record.offset]
        if timeouts >= self.settings.max_attempts:
            return self._dead_letter(record, prepared, "transaction_timeout",
                                     f"{timeouts} transactions did not commit within "
                                     f"TRANSACTION_TIMEOUT_MS={self.settings.transaction_timeout_ms}")
        if prepared.skipped and self.dedup and self.dedup.duplicate_of(prepared) is None:
            # Its original was forgotten (retention, entry limit) since: download it after all.
            return await self.context.preparer.prepare(record, prepared.claim)
        return prepared

    def _refused(self, record: ConsumerRecord, prepared: Prepared,
                 cause: BaseException | None) -> Prepared:
        """A dead letter for a record that can never commit: the broker refused an output,
        or a spooled file turned out bad as it was parsed inside its transaction."""
        if isinstance(cause, PoisonError):
            return self._dead_letter(record, prepared, cause.reason, cause.message)
        return self._dead_letter(record, prepared, "record_too_large",
                                 f"the broker refused an output record: {cause!r}")

    def _dead_letter(self, record: ConsumerRecord, prepared: Prepared, reason: str,
                     message: str) -> Prepared:
        return self.context.preparer.dead_letter(record, None, PoisonError(reason, message),
                                                 prepared.attempts, prepared.dedup_key)

    def _give_up_if_final(self, result: Result, key: tuple[TopicPartition, int] | None) -> None:
        cause = result.cause
        if result.outcome is Outcome.FENCED:
            raise TaskFenced(repr(cause)) from cause
        if result.outcome is Outcome.TIMED_OUT:
            if key is None:  # a group: its records go one by one next, each counted
                raise TaskFailed(f"a transaction timed out: {cause!r}") from cause
            self.context.timeouts[key] += 1  # a new producer tries again, at once
            raise TaskFailed(f"transaction timed out ({self.context.timeouts[key]} of "
                             f"{self.settings.max_attempts} attempts): {cause!r}") from cause
        if result.outcome is Outcome.UNKNOWN:
            raise TaskFailed(f"commit outcome unknown: {cause!r}") from cause
        if result.outcome is Outcome.FATAL:
            raise TaskFailed(f"producer failed: {cause!r}") from cause
        if result.outcome is Outcome.UNAUTHORIZED:
            raise TaskUnauthorized(f"not authorized: {cause!r}") from cause

    def done(self, record: ConsumerRecord, prepared: Prepared) -> None:
        original = self.dedup.duplicate_of(prepared) if self.dedup else None
        if self.dedup:
            self.dedup.committed(record, prepared)
        if original is not None:
            self.stats.duplicate()
            log.info("duplicate input: its file was committed at offset %d", original,
                     extra={**self._log_context, "event": "duplicate", "offset": record.offset,
                            "original_offset": original})
        elif prepared.reason is not None:  # a dead letter
            self.stats.dead_lettered(prepared.reason)
        else:
            self.stats.committed(prepared.count)

