"""A spooled file's transactions, read back from its spool file one slice at a time.

Twice: once before the transaction, to validate the whole file and count its
transactions (a malformed file never opens a transaction, and every record carries
the file's ``count``); then inside each attempt of its transaction, as the slices are
sent (app/kafka/batches.py). Memory holds one slice, whatever the file's size.

NDJSON slices are whole lines, about SLICE_BYTES each; CSV slices are the rows of about
SLICE_BYTES of lines (a quoted field may span lines). A JSON array is never spooled
(app/files/sink.py): its items can only be told apart by parsing the whole array.
Each slice is parsed in a worker thread, so heartbeats and commits go on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

from app.errors import PoisonError
from app.files.item import Item, output_key
from app.files.meter import BODY_COST, OBJECT_COST
from app.files.parse import parse_ndjson
from app.files.parse_csv import Column, iter_csv_items
from app.files.sink import array_too_large, starts_array
from app.kafka.batches import SEND_WINDOW_BYTES

SLICE_BYTES = 4 * 1024 * 1024
# A line longer than this many slices is no transaction (MAX_RECORD_BYTES is far less).
_LONGEST_LINE_SLICES = 4
_BOM = b"\xef\xbb\xbf"
_value_of: Callable[[Item], bytes] = operator.itemgetter(0)
Keyed = tuple[bytes | list[bytes], list[bytes]]  # one key for all, or one each; the values


@dataclass(frozen=True)
class SpoolReader:
    """How to read one spooled file's transactions back."""

    path: Path
    url: str
    csv: bool
    max_items: int
    key_field: str | None
    columns: tuple[Column, ...] | None
    threshold: int  # SPOOL_THRESHOLD_BYTES, for the error about an array

    def items(self) -> Generator[list[Item], None, None]:
        return self._csv() if self.csv else self._ndjson()

    def keyed(self, items: list[Item]) -> Keyed:
        values = list(map(_value_of, items))
        if self.key_field is None:
            return self.url.encode(), values
        return [output_key(item, self.key_field, self.url) for item in items], values

    async def slices(self) -> AsyncIterator[Keyed]:
        """Each slice's keys and values, parsed off the event loop."""
        parsed = self.items()
        try:
            while (items := await asyncio.to_thread(next, parsed, None)) is not None:
                yield self.keyed(items)
        finally:
            # Cancelled while a worker thread parses a slice: it ends that slice, and the
            # generator (with its file) goes once nothing refers to it.
            with contextlib.suppress(ValueError):
                parsed.close()

    def _ndjson(self) -> Generator[list[Item], None, None]:
        keep, done, line0, rest = self.key_field is not None, 0, 0, b""
        with open(self.path, "rb") as spooled:
            while True:
                block = spooled.read(SLICE_BYTES)
                data = rest + block
                if line0 == 0 and not rest:
                    data = data.removeprefix(_BOM)
                    if starts_array([data]):
                        raise array_too_large(self.threshold)
                cut = data.rfind(b"\n") + 1 if block else len(data)
                if block and cut == 0:
                    rest = self._one_line(data, line0)
                    continue
                part, rest = data[:cut], data[cut:]
                items = parse_ndjson(part, max_items=self.max_items - done,
                                     first_line=line0 + 1, keep_objects=keep)
                done, line0 = done + len(items), line0 + part.count(b"\n")
                yield items
                if not block:
                    return

    @staticmethod
    def _one_line(data: bytes, line0: int) -> bytes:
        if len(data) > _LONGEST_LINE_SLICES * SLICE_BYTES:
            raise PoisonError("record_too_large", f"line {line0 + 1} is longer than "
                              f"{_LONGEST_LINE_SLICES * SLICE_BYTES} bytes")
        return data

    def _csv(self) -> Generator[list[Item], None, None]:
        with open(self.path, encoding="utf-8", newline="") as text:
            lines = _CountedLines(text)
            rows = iter_csv_items(lines, columns=self.columns, max_items=self.max_items,
                                  key_field=self.key_field)
            while True:
                try:
                    items = _rows_of(rows, lines, SLICE_BYTES)
                except UnicodeDecodeError as exc:
                    raise PoisonError("invalid_utf8", f"after line {lines.count}: invalid "
                                      f"UTF-8 ({exc.reason})") from None
                if not items:
                    return
                yield items


class _CountedLines:
    """A text file's lines, counting their characters and how many there were."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines, self.chars, self.count = lines, 0, 0

    def __iter__(self) -> _CountedLines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.chars += len(line)
        self.count += 1
        return line


def _rows_of(rows: Iterator[Item], lines: _CountedLines, most: int) -> list[Item]:
    """The next rows, up to about ``most`` characters of lines."""
    taken, until = [], lines.chars + most
    for item in rows:
        taken.append(item)
        if lines.chars >= until:
            break
    return taken


def largest(keyed: Keyed, first_index: int) -> tuple[int, int]:
    """The biggest record of a slice, as (key + value + index bytes, its index)."""
    keys, values = keyed
    sizes = list(map(len, values))
    if isinstance(keys, bytes):
        sizes = [size + len(keys) for size in sizes]
    else:
        sizes = list(map(operator.add, sizes, map(len, keys)))
    biggest = max(sizes)
    at = sizes.index(biggest)
    return biggest + len(str(first_index + at)), first_index + at


async def validate(reader: SpoolReader) -> tuple[int, tuple[int, int]]:
    """Parse the whole file once: its transactions' count, and its biggest record
    (bytes without the headers, and its index); PoisonError if any part is bad."""
    count, biggest = 0, (0, -1)
    async for keyed in reader.slices():
        if keyed[1]:
            biggest = max(biggest, largest(keyed, count))
        count += len(keyed[1])
    return count, biggest


def streaming_cost(size: int, count: int) -> int:
    """What one slice of the file holds while it is parsed and sent: its bytes and
    lines, the objects of its transactions, and the send window (app/kafka/batches.py)."""
    per_slice = -(-count * SLICE_BYTES // max(size, 1)) + 1
    return (BODY_COST + 1) * SLICE_BYTES + OBJECT_COST * per_slice + SEND_WINDOW_BYTES
