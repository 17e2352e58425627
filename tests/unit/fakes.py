"""Small fakes for unit tests of pure logic: a scripted producer, an in-memory consumer,
a downloader serving bytes by URL. The same behaviours run against the real broker in
tests/integration; these only make the rules quick to pin down."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import errors as kafka
from aiokafka.structs import ConsumerRecord, TopicPartition

from app.config import Settings, load_settings
from app.errors import TransientError
from app.files.budget import MemoryBudget
from app.files.prepare import Preparer
from app.kafka.committer import make_committer
from app.ops.stats import Stats
from app.task.context import TaskContext
from app.task.producers import OwnProducers


class ScriptedBatch:
    """Holds two records, like a full record batch."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.appended: list[tuple] = []  # (key, value, headers as they were at the append)
        self.closed = False

    def append(self, *, key, value, timestamp, headers):
        if len(self.records) == 2:
            return None
        self.records.append(value)
        self.appended.append((key, value, list(headers)))
        return object()

    def size(self) -> int:
        return sum(len(value or b"") for value in self.records)

    def close(self) -> None:
        self.closed = True


class ScriptedProducer:
    """Records its calls; raises the scripted error at the named step, once per entry.

    ``fail`` maps a step (start, begin, send, offsets, commit, abort) to one error or a
    list of errors raised on successive calls."""

    def __init__(self, fail: dict[str, BaseException | list[BaseException]] | None = None):
        self.fail = {k: v if isinstance(v, list) else [v] for k, v in (fail or {}).items()}
        self.calls: list[str] = []
        self.sent: list[bytes] = []
        self.appended: list[tuple] = []  # every record sent: (key, value, headers)
        self.committed: list[bytes] = []
        self.offset_log: list[dict] = []  # the offsets of each transaction, in order
        self.refuse: bytes | None = None  # a value the "broker" always refuses as too large
        self._open: list[bytes] = []

    def _error(self, name: str) -> BaseException | None:
        errors = self.fail.get(name)
        return errors.pop(0) if errors else None

    async def _step(self, name: str) -> None:
        self.calls.append(name)
        error = self._error(name)
        if error is not None:
            raise error

    async def start(self):
        await self._step("start")

    async def stop(self):
        self.calls.append("stop")

    async def begin_transaction(self):
        await self._step("begin")
        self._open = []

    async def partitions_for(self, topic):
        return {0, 1, 2}

    def create_batch(self):
        return ScriptedBatch()

    async def send_batch(self, batch, topic, *, partition):
        assert partition in (0, 1, 2), "every batch names its partition"
        assert batch.closed, "a batch is closed before it is handed over (no linger)"
        self.calls.append("send")
        self.sent.extend(batch.records)
        self.appended.extend(batch.appended)
        self._open.extend(batch.records)
        future = asyncio.get_running_loop().create_future()
        error = self._error("send")
        if self.refuse is not None and self.refuse in batch.records:
            error = kafka.MessageSizeTooLargeError()
        future.set_exception(error) if error else future.set_result(None)
        return future

    async def send_offsets_to_transaction(self, offsets, group_id):
        await self._step("offsets")
        self.offsets = dict(offsets)
        self.offset_log.append(self.offsets)

    async def commit_transaction(self):
        await self._step("commit")
        self.committed.extend(self._open)

    async def abort_transaction(self):
        await self._step("abort")


class MemoryConsumer:
    """What a task asks of the consumer: committed offsets, seek, pause and resume."""

    def __init__(self, committed: dict[TopicPartition, int] | None = None) -> None:
        self.offsets = dict(committed or {})
        self.assigned: set[TopicPartition] = set()
        self.paused: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.stable: dict[TopicPartition, int] = {}  # last stable offsets, when a test sets them
        self.listed: dict[TopicPartition, int] = {}  # what end_offsets answers

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def pause(self, tp: TopicPartition) -> None:
        self.paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self.paused.discard(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def position(self, tp: TopicPartition) -> int:
        """Where a test put it: the fake's position does not follow delivered records."""
        if tp not in self.assigned:
            raise kafka.IllegalStateError(f"{tp} is not assigned")
        return self.positions[tp]

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.offsets.get(tp)

    async def beginning_offsets(self, partitions):
        return {tp: 0 for tp in partitions}

    async def commit(self, offsets):
        self.offsets.update(offsets)

    def last_stable_offset(self, tp: TopicPartition) -> int | None:
        return self.stable.get(tp)

    async def end_offsets(self, partitions):
        return {tp: self.listed[tp] for tp in partitions if tp in self.listed}


def assigned_consumer(*tps: TopicPartition, committed: int = 0) -> MemoryConsumer:
    """A consumer that holds ``tps``, each with ``committed`` as its committed offset."""
    consumer = MemoryConsumer({tp: committed for tp in tps})
    consumer.assigned.update(tps)
    return consumer


class FileDownloader:
    """Serves ``files[url]``; a URL mapped to an exception raises it (once per entry in
    ``failures``); ``gate`` (if set) holds every download until it is set."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.failures: dict[str, list[Exception]] = {}
        self.requests: list[str] = []
        self.gate: asyncio.Event | None = None
        self.gates: dict[str, asyncio.Event] = {}  # hold one URL's download until set
        self.piece = 64 * 1024
        self.content_types: dict[str, str] = {}  # the Content-Type a URL is served with

    async def download(self, url: str, count=None, on_response=None) -> bytes:
        self.requests.append(url)
        if self.gate is not None:
            await self.gate.wait()
        if url in self.gates:
            await self.gates[url].wait()
        failures = self.failures.get(url)
        if failures:
            raise failures.pop(0)
        if url not in self.files:
            raise TransientError("connection_error", f"no such file {url}")
        body = self.files[url]
        if on_response is not None:
            on_response(url, self.content_types.get(url))
        for start in range(0, len(body), self.piece):  # counted as they "arrive"
            if count is not None:
                count(body[start:start + self.piece])
            await asyncio.sleep(0)
        return body


def settings(*flags: str) -> Settings:
    return load_settings(["--retry-backoff-s", "0.001", "--retry-backoff-max-s", "0.002",
                          *flags], {})


def record(offset: int, url: str, topic: str = "in", partition: int = 0) -> ConsumerRecord:
    return ConsumerRecord(topic, partition, offset, 0, 0, b"k", url.encode(), None, 1,
                          len(url), [])


class Sleeps:
    """An injected ``sleep`` that records each delay and returns at once (or, with
    ``hold``, never returns by itself)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.hold = False

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.hold:
            await asyncio.Event().wait()
        await asyncio.sleep(0)


def context(config: Settings, consumer: MemoryConsumer, downloader: FileDownloader,
            make_producer: Callable[[int], ScriptedProducer], sleep: Sleeps | None = None,
            budget: MemoryBudget | None = None) -> TaskContext:
    stats = Stats()
    sleep = sleep or Sleeps()
    preparer = Preparer(config, downloader, budget or MemoryBudget(1 << 30), stats,  # type: ignore[arg-type]
                        sleep=sleep)
    producers = OwnProducers(make_producer, stats)  # type: ignore[arg-type]
    return TaskContext(config, consumer, preparer, stats,  # type: ignore[arg-type]
                       make_committer(config, consumer), producers, sleep)


async def until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Wait for a condition of the fakes (they run on the same loop)."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - polls plain state of the fakes, with a deadline
            await asyncio.sleep(0.001)
    assert check(), what


class EmptyChangelog:
    """A restore consumer over an empty changelog partition."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def assign(self, partitions) -> None:
        self.partitions = list(partitions)

    async def seek_to_beginning(self, *partitions) -> None: ...

    async def log_end(self, tp) -> int:
        return 0

    async def position(self, tp) -> int:
        return 0
