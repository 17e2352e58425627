"""CSV files to transactions. Pure: no I/O, logging or env.

A header row names the columns; every other non-blank row is one transaction, written
as a compact JSON object (the same ``Item`` the JSON path makes). RFC 4180 quoting,
a UTF-8 BOM, CRLF or LF. ``CSV_COLUMNS`` maps header columns onto transaction fields
and types them; without it every column is a string field named by its header. A
number column's value must be a JSON number and is written with its digits as they
are (an ``orjson.Fragment``, never a float). Errors name the 1-based data row (the
header and blank lines not counted) and the physical line the row starts on.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import NamedTuple

import orjson

from app.errors import PoisonError
from app.files.item import Item

_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")  # RFC 8259
_TYPES = ("string", "number")
_CSV_TYPES = frozenset({"text/csv"})
_CSV_SUFFIXES = (".csv", ".csv.gz")


class Column(NamedTuple):
    """One CSV_COLUMNS entry: ``column[=field][:type][?]``."""

    name: str        # as the header spells it
    field: str       # the transaction's field
    number: bool     # a JSON number, digits as written; else a string
    optional: bool   # may be empty: "" for a string, null for a number


def parse_columns(text: str) -> tuple[Column, ...] | None:
    """CSV_COLUMNS, e.g. ``id=tx,acct=account,amount:number,memo?``; ValueError
    (saying what it must be) for a bad one. Empty: None, every column a string."""
    if not text.strip():
        return None
    columns = tuple(_column(entry.strip()) for entry in text.split(","))
    for attr, what in (("name", "column"), ("field", "field")):
        names = [getattr(c, attr) for c in columns]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"{what} {twice[0]!r} appears twice; each must appear once")
    return columns


def _column(entry: str) -> Column:
    spec, optional = (entry[:-1], True) if entry.endswith("?") else (entry, False)
    spec, _, kind = spec.partition(":")
    name, renamed, field = spec.partition("=")
    name, field, kind = name.strip(), (field if renamed else name).strip(), kind.strip()
    kind = kind or "string"
    if not name or not field:
        raise ValueError(f"entry {entry!r}: must be column[=field][:type][?] with names")
    if kind not in _TYPES:
        raise ValueError(f"entry {entry!r}: type must be string or number")
    return Column(name, field, kind == "number", optional)


def is_csv(content_type: str | None, *paths: str) -> bool:
    """CSV if the response says ``text/csv`` (with any parameters), or a URL path ends
    in ``.csv`` or ``.csv.gz``; otherwise the file is JSON."""
    media = (content_type or "").partition(";")[0].strip().lower()
    return media in _CSV_TYPES or any(p.lower().endswith(_CSV_SUFFIXES) for p in paths)


def parse_csv(body: bytes, *, columns: tuple[Column, ...] | None, max_items: int,
              key_field: str | None = None) -> list[Item]:
    """A decompressed CSV file's transactions; the whole file is poison if one row is.

    An item's ``obj`` holds only ``key_field`` (what ``output_key`` reads), or is None
    without one: a wide row's whole dict would take several times its bytes."""
    return csv_items(_lines(body), columns=columns, max_items=max_items, key_field=key_field)


def _lines(body: bytes) -> Iterator[str]:
    """The file's lines, each with its line ending (a quoted field may span several)."""
    start, lineno = 0, 1
    while start < len(body):
        end = body.find(b"\n", start) + 1 or len(body)
        try:
            yield body[start:end].decode("utf-8")
        except UnicodeDecodeError as e:
            raise PoisonError("invalid_utf8", f"line {lineno}: invalid UTF-8 at byte "
                              f"{start + e.start} of the file") from None
        start, lineno = end, lineno + 1


def csv_items(lines: Iterable[str], *, columns: tuple[Column, ...] | None, max_items: int,
              key_field: str | None = None) -> list[Item]:
    """Transactions from a CSV file's lines (line endings kept), header first."""
    return list(iter_csv_items(lines, columns=columns, max_items=max_items,
                               key_field=key_field))


def iter_csv_items(lines: Iterable[str], *, columns: tuple[Column, ...] | None,
                   max_items: int, key_field: str | None = None) -> Iterator[Item]:
    """``csv_items`` one at a time, for a spooled file read as it is parsed."""
    rows = _Rows(lines)
    header = next(rows, None)
    if header is None:
        return
    plan = _plan(header, columns)
    width, done = len(header), 0
    for row in rows:
        where = f"row {rows.number} (line {rows.line})"
        if len(row) != width:
            raise PoisonError("invalid_csv", f"{where}: {len(row)} fields where the header "
                              f"has {width}")
        if done >= max_items:
            raise PoisonError("too_many_transactions",
                              f"file has more than {max_items} transactions")
        done += 1
        yield _item(row, plan, where, key_field)


class _Rows:
    """Non-blank rows, tokenised strictly; ``number`` is the data row (the header is
    row 0) and ``line`` the physical line it starts on."""

    def __init__(self, lines: Iterable[str]) -> None:
        lines = iter(lines)
        first = next(lines, "").removeprefix("\ufeff")  # a BOM carries no data
        self._reader = csv.reader(chain((first,), lines), strict=True)
        self.number, self.line = -1, 0

    def __iter__(self) -> Iterator[list[str]]:
        return self

    def __next__(self) -> list[str]:
        while True:
            start = self._reader.line_num + 1
            try:
                row = next(self._reader)
            except csv.Error as exc:
                where = f"row {self.number + 1} (line {start})"
                raise PoisonError("invalid_csv", f"{where}: {_plainly(exc)}") from None
            if row:  # a blank line carries nothing, as in NDJSON
                self.number, self.line = self.number + 1, start
                return row


# The csv module's messages for what RFC 4180 forbids, in a file's terms.
_PLAINLY = {
    "unexpected end of data": "a quoted field is still open at the end of the file",
    "',' expected after '\"'": "a closing quote must be followed by ',' or the line's end",
    "new-line character seen in unquoted field": "a carriage return inside an unquoted "
                                                 "field (lines end with CRLF or LF)",
}


def _plainly(exc: csv.Error) -> str:
    text = str(exc)
    return next((plain for known, plain in _PLAINLY.items() if text.startswith(known)), text)


def _plan(header: list[str], columns: tuple[Column, ...] | None) -> list[tuple[int, Column]]:
    """Which header index feeds each field, in the order the fields are written."""
    if columns is None:
        columns = tuple(Column(name, name, False, True) for name in header)
        if "" in header:
            raise PoisonError("invalid_csv", f"header: column {header.index('') + 1} has "
                              "no name")
    plan = []
    for column in columns:
        found = header.count(column.name)
        if found != 1:
            problem = "no column" if found == 0 else f"{found} columns named"
            raise PoisonError("invalid_csv", f"header: {problem} {column.name!r}")
        plan.append((header.index(column.name), column))
    return plan


def _item(row: list[str], plan: list[tuple[int, Column]], where: str,
          key_field: str | None) -> Item:
    obj: dict[str, object] = {}
    for index, column in plan:
        text = row[index]
        if not text:
            if not column.optional:
                raise PoisonError("missing_value", f"{where}: {column.name!r} is empty")
            obj[column.field] = None if column.number else ""
        elif column.number:
            if _NUMBER.fullmatch(text) is None:
                raise PoisonError("invalid_number", f"{where}: {column.name!r} is "
                                  f"{text[:40]!r}, not a number")
            obj[column.field] = orjson.Fragment(text)  # re-emitted verbatim: exact
        else:
            obj[column.field] = text
    # A copy: orjson's result keeps its whole write buffer (item.py's owned says why).
    value = memoryview(orjson.dumps(obj)).tobytes()
    if key_field is None:
        return Item(value, None)
    return Item(value, {key_field: obj[key_field]} if key_field in obj else {})
