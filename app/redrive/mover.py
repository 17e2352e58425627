"""The Kafka side of re-drive: read the job's DLQ range (app/redrive/span.py), move
letters in transactions.

Exactly once, as the service itself does it: the job's transactional producer starts
first (``init_transactions`` fences an older run of the job and settles the
transaction it left open), only then is the job's committed DLQ offset read; each
transaction carries the re-driven input records *and* the job's DLQ offsets
(``send_offsets_to_transaction`` with the job's own group). A run killed anywhere
is resumed by running it again: what it committed is behind the offset, what it
had not is aborted and read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka

from app.config import Settings
from app.files.records import OutRecord
from app.kafka.clients import FatalStartupError, check_connection, connection
from app.kafka.committer import ExactlyOnceCommitter, Outcome
from app.ops.log import loop_exceptions
from app.redrive.job import Options, RedriveFailed, Tally, Verdict, judge
from app.redrive.progress import Progress
from app.redrive.record import DeadLetter, read_dead_letter, redriven_headers
from app.redrive.span import Span, plan, topic_partitions

STALL_S = 60.0  # no DLQ progress for this long while records remain: give up
POLL_MS = 500


async def run(settings: Settings, options: Options, tally: Tally, progress: bool) -> None:
    # As in the service: a producer whose sender died leaves failures nobody awaits.
    asyncio.get_running_loop().set_exception_handler(loop_exceptions)
    try:
        await check_connection(settings)
    except FatalStartupError as exc:
        raise RedriveFailed(str(exc)) from None
    producer = None if options.dry_run else AIOKafkaProducer(
        **connection(settings), transactional_id=options.transactional_id(settings),
        enable_idempotence=True, client_id=f"txingest-redrive-{options.job}")
    consumer = AIOKafkaConsumer(
        **connection(settings), group_id=options.group_id(settings),
        client_id=f"txingest-redrive-{options.job}", isolation_level="read_committed",
        enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        if producer is not None:
            await producer.start()  # first: settles what a killed run left open
        await consumer.start()
        spans = await plan(settings, consumer, options)
        mover = Mover(settings, options, tally, consumer, producer, spans)
        if producer is not None:
            mover.input_partitions = await topic_partitions(settings, settings.input_topic)
            if not mover.input_partitions:
                raise RedriveFailed(f"INPUT_TOPIC {settings.input_topic!r} does not exist")
        with Progress.to(sys.stderr, sum(s.stop - s.start for s in spans.values()),
                         enabled=progress) as bar:
            mover.progress = bar
            await mover.run()
    except kafka.ProducerFenced:
        raise RedriveFailed(f"another run of job {options.job} took over (fenced)") from None
    except kafka.KafkaError as exc:
        raise RedriveFailed(f"Kafka error: {exc!r}; run the same command again to resume"
                            ) from None
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()


class Mover:
    def __init__(self, settings: Settings, options: Options, tally: Tally,
                 consumer: AIOKafkaConsumer, producer: AIOKafkaProducer | None,
                 spans: dict[TopicPartition, Span]) -> None:
        self.settings = settings
        self.options = options
        self.tally = tally
        self.consumer = consumer
        self.producer = producer
        self.spans = spans
        self.done = {tp: span.start for tp, span in spans.items()}  # committed, this run
        self.input_partitions: set[int] = set()
        self.progress: Progress | None = None
        self.transactions = 0
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        active = [tp for tp, span in self.spans.items() if span.start < span.stop]
        for tp in active:
            self.consumer.seek(tp, self.spans[tp].start)
        with _stop_on_signals(self.stopping):
            last_progress = time.monotonic()
            while active:
                if self.stopping.is_set():
                    raise RedriveFailed("interrupted; run the same command again to resume")
                batch = await self.consumer.getmany(*active, timeout_ms=POLL_MS,
                                                    max_records=self.options.batch)
                letters = self._judge(batch)
                advanced = await self._advanced(active)
                if letters or advanced:
                    await self._commit(letters, advanced)
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > STALL_S:
                    raise RedriveFailed(f"no progress reading {self.settings.dlq_topic} "
                                        f"for {STALL_S:.0f} s")
                active = [tp for tp in active if self.done[tp] < self.spans[tp].stop]
                self._show()

    def _judge(self, batch: dict[TopicPartition, list]) -> list[DeadLetter]:
        """Count every record in the span; return the ones to move, in DLQ order."""
        to_move = []
        for tp, records in batch.items():
            for r in records:
                if r.offset >= self.spans[tp].stop:
                    break  # arrived after the run started: a later run's business
                letter = read_dead_letter(tp.partition, r.offset, r.timestamp, r.key, r.value,
                                          r.headers)
                verdict = judge(letter, self.options.selection, self.options.max_redrives)
                self.tally.count(letter, verdict)
                if verdict is Verdict.MOVE:
                    to_move.append(letter)
        return to_move

    async def _advanced(self, active: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Partitions whose position moved (past records or transaction markers)."""
        moved = {}
        for tp in active:
            position = min(await self.consumer.position(tp), self.spans[tp].stop)
            if position > self.done[tp]:
                moved[tp] = position
        return moved

    async def _commit(self, letters: list[DeadLetter], offsets: dict[TopicPartition, int]
                      ) -> None:
        if self.producer is not None:
            await self._transaction(self.producer, letters, offsets)
            self.tally.confirm(letters)
        self.done.update(offsets)

    async def _transaction(self, producer: AIOKafkaProducer, letters: Sequence[DeadLetter],
                           offsets: dict[TopicPartition, int]) -> None:
        """The letters' input records and the job's DLQ offsets, in one transaction of the
        service's own exactly-once committer (app/kafka/committer.py)."""
        records = [OutRecord(self.settings.input_topic, letter.key, letter.value,  # type: ignore[arg-type]
                             redriven_headers(letter, self.settings.dlq_topic),
                             self._partition(letter)) for letter in letters]
        if letters:
            self.transactions += 1
        committer = ExactlyOnceCommitter(self.options.group_id(self.settings))
        if self.transactions == self.options.halt_in_transaction and letters:
            producer = _HaltsBeforeCommit(producer, self.transactions)  # type: ignore[assignment]
        result = await committer.commit(producer, offsets, records)
        if result.outcome is Outcome.DONE:
            return
        if result.outcome is Outcome.FENCED:
            raise RedriveFailed(f"another run of job {self.options.job} took over (fenced)")
        if result.outcome is Outcome.UNKNOWN:  # never aborted: the next run's start settles it
            raise RedriveFailed(f"commit outcome unknown ({result.cause!r}); run the same "
                                "command again to resume")
        raise RedriveFailed(f"transaction failed ({result.cause!r}); run the same command "
                            "again to resume")

    def _partition(self, letter: DeadLetter) -> int | None:
        """The input partition the record came from, if it still exists; else by key."""
        if (letter.source_topic == self.settings.input_topic
                and letter.source_partition in self.input_partitions):
            return letter.source_partition
        return None

    def _show(self) -> None:
        if self.progress is not None:
            read = sum(self.done[tp] - span.start for tp, span in self.spans.items())
            self.progress.update(read, sum(self.tally.moved.values()),
                                 sum(self.tally.selected.values()))


class _HaltsBeforeCommit:
    """TESTING AID: the real producer, except that it hangs with the transaction open
    (its records sent and acknowledged, the offsets added), to be killed."""

    def __init__(self, producer: AIOKafkaProducer, transaction: int) -> None:
        self._producer, self._transaction = producer, transaction

    def __getattr__(self, name: str) -> object:
        return getattr(self._producer, name)

    async def send_offsets_to_transaction(self, offsets: object, group_id: str) -> None:
        await self._producer.send_offsets_to_transaction(offsets, group_id)
        print(f"txingest redrive: test halt in transaction {self._transaction}",
              file=sys.stderr, flush=True)
        await asyncio.Event().wait()


@contextlib.contextmanager
def _stop_on_signals(stopping: asyncio.Event):  # type: ignore[no-untyped-def]
    """The first SIGINT/SIGTERM stops after the transaction in flight; the next one
    acts as usual (the handler is removed)."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def first(sig: signal.Signals) -> None:
        stopping.set()
        loop.remove_signal_handler(sig)

    for sig in signals:
        loop.add_signal_handler(sig, first, sig)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
