"""Turn one input record into the records to write: outputs, or one dead letter.

This is the part of a record's work done *outside* its Kafka transaction, so a
slow download can never run into the transaction timeout.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

from aiokafka.structs import ConsumerRecord

from app.config import Settings
from app.dedup.store import content_key, url_key
from app.errors import IngestError, PoisonError, TransientError, backoff
from app.files.budget import UNCOUNTED, MemoryBudget, NoRoom, Reservation
from app.files.dead_letter import dead_letter_record
from app.files.fetch import Downloader
from app.files.input_url import parse_input_url
from app.files.item import Item, output_key
from app.files.meter import Meter
from app.files.parse import parse_transactions
from app.files.parse_csv import parse_csv
from app.files.records import FileOutputs, Headers, Output, OutRecord, Prepared, index_headers
from app.files.sink import SpoolLater
from app.files.spool import Spool, SpoolFile, SpoolFull
from app.files.spooling import Spooling
from app.ops.stats import Stats
from app.redaction import redact_url

log = logging.getLogger(__name__)
T = TypeVar("T")
# Record framing the broker counts on top of key, value and headers.
RECORD_OVERHEAD = 64
PARSE_INLINE_BYTES = 256 * 1024
# What a prepared record's Python objects take beyond its bytes, so MAX_BUFFERED_BYTES
# bounds memory (docs/benchmarks.md, "Memory", has the measurements).
HELD_RECORD_OVERHEAD = 350
_value_of: Callable[[Item], bytes] = operator.itemgetter(0)  # an Item's value, in C
ADMISSION_BYTES = 256 * 1024  # what a download of unknown size is first admitted with


async def _off_loop(work: Callable[[bytes], T], body: bytes) -> T:
    """``work(body)``; off the event loop for a big body (100+ ms of parsing or hashing),
    so heartbeats, commits and other partitions keep moving."""
    if len(body) < PARSE_INLINE_BYTES:
        return work(body)
    return await asyncio.to_thread(work, body)


def _digits_below(count: int) -> int:
    """The digits of every index header value: 0, 1, ..., count - 1 in decimal."""
    total, width, low = 0, 1, 0
    while low < count:
        high = min(count, 10 * low or 10)
        total += (high - low) * width
        low, width = high, width + 1
    return total


def _size(headers: Headers) -> int:
    return sum(len(k) + len(v) for k, v in headers)


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
    def __init__(self, settings: Settings, downloader: Downloader, budget: MemoryBudget,
                 stats: Stats, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 spool: Spool | None = None) -> None:
        self.settings = settings
        self.downloader = downloader
        self.budget = budget
        self.stats = stats
        self._sleep = sleep
        self.spooling = Spooling(settings, spool, stats)  # without a spool: all in memory

    async def prepare(self, msg: ConsumerRecord, reservation: Reservation = UNCOUNTED,
                      known: Callable[[bytes], bool] | None = None) -> Prepared:
        """Download and parse with bounded retries; never raises IngestError.

        With DEDUP=url, a record whose key ``known`` says was committed is not
        downloaded (the task decides again at commit time)."""
        try:
            url = parse_input_url(msg.value, self.settings.max_url_bytes)
        except PoisonError as exc:
            return self.dead_letter(msg, None, exc, attempts=1)
        key = url_key(url) if self.settings.dedup == "url" else None
        if key is not None and known is not None and known(key):
            return Prepared([], attempts=0, claim=reservation, dedup_key=key, skipped=True)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(msg, url, reservation, attempt, key)
            except IngestError as exc:
                reservation.settle(0)
                if isinstance(exc, PoisonError) or attempt >= self.settings.max_attempts:
                    return self.dead_letter(msg, url, exc, attempt, key)
                self.stats.retried(exc.reason)
                log.warning("download failed, will retry: %s", exc.message, extra={
                    "partition": msg.partition, "offset": msg.offset, "url": redact_url(url),
                    "reason": exc.reason, "attempt": attempt})
                await self._sleep(backoff(attempt, self.settings.retry_backoff_s,
                                          self.settings.retry_backoff_max_s))

    async def _attempt(self, msg: ConsumerRecord, url: str, reservation: Reservation,
                       attempt: int, key: bytes | None) -> Prepared:
        try:
            body, csv, spooled = await self._download(url, reservation, f"{msg.partition}-"
                                                                      f"{msg.offset}")
            if spooled is not None:
                return await self.spooling.outputs(
                    spooled, url, csv, source_headers(msg, url),
                    Prepared([], attempts=attempt, claim=reservation, dedup_key=key),
                    self.settings.max_record_bytes - RECORD_OVERHEAD)
            if self.settings.dedup == "content":
                key = await _off_loop(content_key, body)
            items = await _off_loop(partial(self._parse, csv=csv), body)
            del body  # the items hold what they need of it
            return self.outputs(msg, url, items, attempt, reservation, key)
        except IngestError:
            raise
        except Exception as exc:  # a bug must not wedge the partition
            log.exception("unexpected error preparing a record")
            raise TransientError("internal_error", repr(exc)) from exc

    async def _download(self, url: str, reservation: Reservation, name: str
                        ) -> tuple[bytes, bool, SpoolFile | None]:
        """The body (or its spool file) and whether it is CSV, counted against the budget
        as it arrives. A download that outgrows the room it was given stops, waits
        (holding no connection) until there is room, and starts again: that is not a
        failed attempt. So does one that must be spooled before it is the head."""
        need, spool_now = ADMISSION_BYTES, False
        while True:
            await reservation.admit(need)
            meter = Meter(reservation, url)
            sink = self.spooling.sink(meter, reservation, name, spool_now)
            started = time.monotonic()
            try:
                body = await self.downloader.download(
                    url, sink.count if sink else meter.count, meter.described,
                    **({"sink": sink} if sink else {}))
            except (NoRoom, SpoolLater, SpoolFull) as exc:
                need, spool_now = await self.spooling.make_room(exc, meter, reservation, sink)
                continue
            except BaseException:
                if sink is not None:
                    sink.discard()
                raise
            spooled = sink.file if sink is not None else None
            self.stats.downloaded(time.monotonic() - started,
                                  spooled.size if spooled else len(body))
            return body, meter.csv, spooled

    def _parse(self, body: bytes, csv: bool) -> list[Item]:
        most, key_field = self.settings.max_transactions_per_file, self.settings.output_key_field
        if csv:
            return parse_csv(body, columns=self.settings.csv_columns, max_items=most,
                             key_field=key_field)
        return parse_transactions(body, max_items=most, keep_objects=key_field is not None)

    def outputs(self, msg: ConsumerRecord, url: str, items: list[Item], attempts: int,
                reservation: Reservation = UNCOUNTED, dedup_key: bytes | None = None
                ) -> Prepared:
        topic, key_field = self.settings.output_topic, self.settings.output_key_field
        base, count = source_headers(msg, url), ("count", str(len(items)).encode())
        values = list(map(_value_of, items))
        if key_field is None:  # one key for the file: the compact form
            keys: list[bytes] | bytes = url.encode()
        else:
            keys = [output_key(item, key_field, url) for item in items]
        # Only the key, value and index vary by record: size the rest once (this runs
        # once per output message, the hottest code in big files).
        fixed = _size([*base, ("index", b""), count])
        self._check_sizes(keys, values, fixed)
        key_bytes = len(keys) * len(values) if isinstance(keys, bytes) else sum(map(len, keys))
        nbytes = (sum(map(len, values)) + key_bytes + _digits_below(len(values))
                  + (fixed + HELD_RECORD_OVERHEAD) * len(values))
        reservation.settle(nbytes)
        if not values:
            records: list[Output] = []
        elif isinstance(keys, bytes):
            records = [FileOutputs(topic, keys, values, base, count)]
        else:
            new = tuple.__new__  # OutRecord(...) is a Python-level call: twice the cost
            records = [new(OutRecord, (topic, k, v, [*base, index, count], None))
                       for k, v, index in zip(keys, values, index_headers(len(values)),
                                              strict=True)]
        return Prepared(records, attempts=attempts, claim=reservation, dedup_key=dedup_key)

    def _check_sizes(self, keys: list[bytes] | bytes, values: list[bytes], fixed: int) -> None:
        """PoisonError if any record would pass MAX_RECORD_BYTES (``fixed``: what every
        record has besides its key, value and index). A bound is checked in C first; only
        a file that fails it is walked."""
        if not values:
            return
        limit = self.settings.max_record_bytes - RECORD_OVERHEAD
        longest_key = len(keys) if isinstance(keys, bytes) else max(map(len, keys))
        if longest_key + max(map(len, values)) + len(str(len(values) - 1)) + fixed <= limit:
            return
        for index, value in enumerate(values):
            key = keys if isinstance(keys, bytes) else keys[index]
            size = len(key) + len(value) + len(str(index)) + fixed
            if size > limit:
                raise PoisonError("record_too_large", f"transaction {index} makes a record "
                                  f"of {size} bytes; MAX_RECORD_BYTES is "
                                  f"{self.settings.max_record_bytes}")

    def dead_letter(self, msg: ConsumerRecord, url: str | None, exc: IngestError,
                    attempts: int, dedup_key: bytes | None = None) -> Prepared:
        log.warning("dead-lettering record: %s", exc.message, extra={
            "event": "dead_lettered", "partition": msg.partition, "offset": msg.offset,
            "reason": exc.reason,
            "url": redact_url(url) if url else None, "attempts": attempts})
        record = dead_letter_record(self.settings.dlq_topic, msg, url, exc, attempts,
                                    source_headers(msg, url),
                                    self.settings.max_record_bytes - RECORD_OVERHEAD)
        return Prepared([record], attempts=attempts, dedup_key=dedup_key,
                        reason=exc.reason)
