"""Downloaded files to transactions. Pure: no I/O, logging or env.

Every failure is a PoisonError: the same bytes always fail the same way. Numbers must
survive byte-for-byte (``1.50``, ``-0``, 30-digit integers), so a value is either the
item's own source text (fast path: orjson's re-serialisation reproduced it exactly) or
a re-serialisation where each number is an ``orjson.Fragment`` of its source token
(the exact path, app/files/exact_json.py). Items are app/files/item.py's.
"""

from __future__ import annotations

import functools
import re
from itertools import repeat
from operator import add

import orjson

from app.errors import PoisonError
from app.files.exact_json import decode_utf8, exact_item, loads_exact, too_deep
from app.files.item import Item, owned

_BOM = b"\xef\xbb\xbf"
_WS = b" \t\r\n"  # JSON whitespace (RFC 8259); nothing else is skipped
_NON_WS = re.compile(rb"[^ \t\r\n]")
_FAST_MISS_ALLOWANCE = 8  # NDJSON misses tolerated before the fast path is given up
_CHUNK_LINES = 1024  # NDJSON lines parsed by one orjson call on the fast path
# A NamedTuple's own constructor is a Python-level function: in the once-per-line paths
# the tuple is made directly (docs/benchmarks.md, S2 profile).
_tuple_new = tuple.__new__


def parse_transactions(body: bytes, *, max_items: int, max_depth: int = 64,
                       keep_objects: bool = True) -> list[Item]:
    """Parse a decompressed file: a JSON array of objects, or NDJSON (one object a line).

    The whole file is poison if anything in it is; nothing is partly returned.
    Depth counts the item object as 1 (an enclosing array is not counted). Without
    ``keep_objects`` an NDJSON item's ``obj`` is None: a big file's parsed objects are
    the largest thing it makes, and only OUTPUT_KEY_FIELD needs them.
    """
    return _parse(body, max_items, max_depth, fast=True, keep=keep_objects)


def parse_ndjson(body: bytes, *, max_items: int, first_line: int = 1, max_depth: int = 64,
                 keep_objects: bool = True) -> list[Item]:
    """NDJSON lines only (a slice of a spooled file, app/files/streamed.py): errors name
    lines counted from ``first_line``."""
    return _parse_ndjson(body, max_items, max_depth, fast=True, keep=keep_objects,
                         line0=first_line - 1)


def _parse(body: bytes, max_items: int, max_depth: int, *, fast: bool,
           keep: bool = True) -> list[Item]:
    # A UTF-8 BOM carries no data and some Windows tools write one: skip it on purpose.
    skipped = len(_BOM) if body.startswith(_BOM) else 0
    body = body[skipped:]
    first = _NON_WS.search(body)
    if first is None:
        return []
    if body[first.start()] == ord("["):
        return _parse_array(body, max_items, max_depth, fast=fast, skipped=skipped)
    return _parse_ndjson(body, max_items, max_depth, fast=fast, keep=keep)


def _parse_array(
    body: bytes, max_items: int, max_depth: int, *, fast: bool, skipped: int
) -> list[Item]:
    core = body.strip(_WS)
    # Pretty-printed files can never match orjson's compact output; don't pay to try.
    if fast and b"\n" not in core:
        items = _fast_array(core, max_items, max_depth)
        if items is not None:
            return items
    doc = loads_exact(decode_utf8(body, "the file", skipped), "the array", whole_file=True)
    if len(doc) > max_items:
        raise _too_many(max_items)
    return [exact_item(obj, f"item {i} of the array", max_depth) for i, obj in enumerate(doc, 1)]


def _fast_array(core: bytes, max_items: int, max_depth: int) -> list[Item] | None:
    """Items whose values provably equal the source, or None to take the exact path."""
    try:
        doc = orjson.loads(core)
        if len(doc) > max_items or any(type(obj) is not dict for obj in doc):
            return None  # let the exact path name the problem
        values = [owned(orjson.dumps(obj)) for obj in doc]
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    # Equal concatenation means every value is its source item's exact text.
    if b"[" + b",".join(values) + b"]" != core:
        return None
    if any(too_deep(v, obj, max_depth) for v, obj in zip(values, doc, strict=True)):
        return None
    return [Item(v, obj) for v, obj in zip(values, doc, strict=True)]


def _parse_ndjson(body: bytes, max_items: int, max_depth: int, *, fast: bool,
                  keep: bool, line0: int = 0) -> list[Item]:
    lines = body.split(b"\n")
    while lines and not lines[-1].strip(_WS):
        lines.pop()  # trailing blank lines carry nothing (most files end with a newline)
    items: list[Item] = []
    rate = _FastRate()
    for start in range(0, len(lines), _CHUNK_LINES):
        chunk = lines[start:start + _CHUNK_LINES]
        if fast and rate.worth_trying():
            done = _fast_chunk(chunk, max_depth, keep)
            if done is not None and len(items) + len(done) <= max_items:
                rate.hits += len(done)
                items += done
                continue
        _ndjson_lines(chunk, line0 + start, items, max_items, max_depth, fast=fast, keep=keep,
                      rate=rate)
    return items


class _FastRate:
    """Files written with ", " separators never hit: once misses dominate, stop for good."""

    def __init__(self) -> None:
        self.hits = self.misses = 0

    def worth_trying(self) -> bool:
        return self.misses <= self.hits + _FAST_MISS_ALLOWANCE


def _fast_chunk(lines: list[bytes], max_depth: int, keep: bool) -> list[Item] | None:
    """The lines' items if every line is, byte for byte, its object's compact JSON (the
    per-line fast path's test, with one orjson call for the whole chunk and the checks
    in C), else None. A chunk with a blank line goes the per-line way."""
    lines = list(map(bytes.strip, lines, repeat(_WS)))
    if b"" in lines:
        return None
    try:
        objs = orjson.loads(b"[" + b",".join(lines) + b"]")
        if len(objs) != len(lines) or list(map(orjson.dumps, objs)) != lines:
            return None
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    if set(map(type, objs)) != {dict}:
        return None
    # Depth never exceeds a line's opening brackets: only deeper-looking lines need a walk.
    if max(map(add, map(bytes.count, lines, repeat(b"{")),
                    map(bytes.count, lines, repeat(b"[")))) > max_depth:
        return None
    return list(map(_new_item, zip(lines, objs if keep else [None] * len(lines), strict=True)))


def _ndjson_lines(lines: list[bytes], start: int, items: list[Item], max_items: int,
                  max_depth: int, *, fast: bool, keep: bool, rate: _FastRate) -> None:
    for lineno, raw in enumerate(lines, start + 1):
        line = raw.strip(_WS)  # also drops the \r of CRLF files
        if not line:
            continue
        if len(items) >= max_items:
            raise _too_many(max_items)
        item = None
        if fast and rate.worth_trying():
            item = _fast_line(line, max_depth, keep)
            rate.hits += item is not None
            rate.misses += item is None
        if item is None:
            where = f"line {lineno}"
            obj = loads_exact(decode_utf8(line, where), where, whole_file=False)
            item = exact_item(obj, where, max_depth)
            item = item if keep else Item(item.value, None)
        items.append(item)


def _fast_line(line: bytes, max_depth: int, keep: bool) -> Item | None:
    try:
        obj = orjson.loads(line)
        value = orjson.dumps(obj)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    if value != line or type(obj) is not dict or too_deep(value, obj, max_depth):
        return None
    return _tuple_new(Item, (line, obj if keep else None))  # line equals value, sized to fit


_new_item = functools.partial(_tuple_new, Item)  # Item from a (value, obj) pair, in C


def _too_many(max_items: int) -> PoisonError:
    return PoisonError("too_many_transactions", f"file has more than {max_items} transactions")


