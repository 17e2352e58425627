"""Turn one input record into the records to write: outputs, or one dead letter.

This is the part of a record's work done *outside* its Kafka transaction, so a
slow download can never run into the transaction timeout.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple

import orjson
from aiokafka.structs import ConsumerRecord

from app.config import Settings
from app.errors import IngestError, PoisonError, TransientError
from app.fetch import Downloader, redact_url
from app.parse import Item, output_key, parse_input_url, parse_transactions
from app.redrive_record import carried_headers, input_field
from app.stats import Stats

log = logging.getLogger(__name__)
Headers = list[tuple[str, bytes]]
# Record framing the broker counts on top of key, value and headers.
RECORD_OVERHEAD = 64
PARSE_INLINE_BYTES = 256 * 1024
# What a prepared record's Python objects take beyond its bytes, so MAX_BUFFERED_BYTES
# bounds memory (measured on 2-5 MB files: 705 bytes held per 358-byte record).
HELD_RECORD_OVERHEAD = 350


class OutRecord(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers


@dataclass(frozen=True, slots=True)
class Prepared:
    records: list[OutRecord]
    dead_lettered: bool
    attempts: int
    nbytes: int


class ByteBudget:
    """Caps bytes held by prepared-but-uncommitted records across all partitions.

    A new download waits while the cap is exceeded; one already running finishes,
    so memory stays within the cap plus the downloads in flight.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._room = asyncio.Event()
        self._room.set()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    def take(self, nbytes: int) -> None:
        self.used += nbytes
        if self.used >= self.limit:
            self._room.clear()

    def give_back(self, nbytes: int) -> None:
        self.used -= nbytes
        if self.used < self.limit:
            self._room.set()


def backoff(attempt: int, first: float, longest: float) -> float:
    """Exponential with full jitter: spreads retries of many partitions apart."""
    return random.uniform(0.5, 1.0) * min(longest, first * 2 ** (attempt - 1))


def _size(headers: Headers) -> int:
    return sum(len(k) + len(v) for k, v in headers)


def _headers(base: Headers, index: bytes, count: bytes) -> Headers:
    return [*base, ("index", index), ("count", count)]


def source_headers(msg: ConsumerRecord, url: str | None) -> Headers:
    headers = [
        ("source-topic", msg.topic.encode()),
        ("source-partition", str(msg.partition).encode()),
        ("source-offset", str(msg.offset).encode()),
    ]
    if url is not None:
        headers.append(("source-url", url.encode()))
    return headers


class Preparer:
    def __init__(self, settings: Settings, downloader: Downloader, budget: ByteBudget,
                 stats: Stats, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.settings = settings
        self.downloader = downloader
        self.budget = budget
        self.stats = stats
        self._sleep = sleep

    async def prepare(self, msg: ConsumerRecord) -> Prepared:
        """Download and parse with bounded retries; never raises IngestError."""
        try:
            url = parse_input_url(msg.value)
        except PoisonError as exc:
            return self.dead_letter(msg, None, exc, attempts=1)
        attempt = 0
        while True:
            attempt += 1
            try:
                try:
                    await self.budget.wait_for_room()
                    started = time.monotonic()
                    body = await self.downloader.download(url)
                    self.stats.downloaded(time.monotonic() - started, len(body))
                    items = await self._parse(body)
                    return self.outputs(msg, url, items, attempt)
                except IngestError:
                    raise
                except Exception as exc:  # a bug must not wedge the partition
                    log.exception("unexpected error preparing a record")
                    raise TransientError("internal_error", repr(exc)) from exc
            except IngestError as exc:
                if isinstance(exc, PoisonError) or attempt >= self.settings.max_attempts:
                    return self.dead_letter(msg, url, exc, attempt)
                self.stats.retried(exc.reason)
                log.warning("download failed, will retry: %s", exc.message, extra={
                    "partition": msg.partition, "offset": msg.offset, "url": redact_url(url),
                    "reason": exc.reason, "attempt": attempt})
                await self._sleep(backoff(attempt, self.settings.retry_backoff_s,
                                          self.settings.retry_backoff_max_s))

    async def _parse(self, body: bytes) -> list[Item]:
        limit = self.settings.max_transactions_per_file
        if len(body) < PARSE_INLINE_BYTES:
            return parse_transactions(body, max_items=limit)
        # A large file parses for 100+ ms: off the event loop, so heartbeats,
        # commits and other partitions keep moving.
        return await asyncio.to_thread(parse_transactions, body, max_items=limit)

    def outputs(self, msg: ConsumerRecord, url: str, items: list[Item], attempts: int) -> Prepared:
        topic, limit = self.settings.output_topic, self.settings.max_record_bytes
        base = source_headers(msg, url)
        count = str(len(items)).encode()
        # Only the index's digits vary by record: size the rest once, not per record
        # (this loop runs once per output message; S2's profile put 25% of CPU here).
        fixed = _size(_headers(base, b"", count))
        records, nbytes = [], 0
        key_field, url_key = self.settings.output_key_field, url.encode()
        for index, item in enumerate(items):
            key = url_key if key_field is None else output_key(item, key_field, url)
            position = str(index).encode()
            size = len(key) + len(item.value) + fixed + len(position)
            if size + RECORD_OVERHEAD > limit:
                raise PoisonError("record_too_large", f"transaction {index} makes a record of "
                                  f"{size} bytes; MAX_RECORD_BYTES is {limit}")
            records.append(OutRecord(topic, key, item.value, _headers(base, position, count)))
            nbytes += size + HELD_RECORD_OVERHEAD
        self.budget.take(nbytes)
        return Prepared(records, dead_lettered=False, attempts=attempts, nbytes=nbytes)

    def dead_letter(self, msg: ConsumerRecord, url: str | None, exc: IngestError,
                    attempts: int) -> Prepared:
        log.warning("dead-lettering record: %s", exc.message, extra={
            "event": "dead_lettered", "partition": msg.partition, "offset": msg.offset,
            "reason": exc.reason,
            "url": redact_url(url) if url else None, "attempts": attempts})
        value = orjson.dumps({
            "url": url,
            "reason": exc.reason,
            "error": exc.message[:2000],
            "attempts": attempts,
            "source": {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset},
            "input": input_field(msg.value),  # what re-drive sends back (docs/redrive.md)
        })
        headers = source_headers(msg, url) + carried_headers(msg.headers)
        record = OutRecord(self.settings.dlq_topic, msg.key, value, headers)
        return Prepared([record], dead_lettered=True, attempts=attempts, nbytes=0)
