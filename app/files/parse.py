"""Downloaded files to transactions. Pure: no I/O, logging or env.

Every failure is a PoisonError: the same bytes always fail the same way. Numbers must
survive byte-for-byte (``1.50``, ``-0``, 30-digit integers), so a value is either the
item's own source text (fast path: orjson's re-serialisation reproduced it exactly) or
a re-serialisation where each number is an ``orjson.Fragment`` of its source token.
"""

from __future__ import annotations

import functools
import json
import re
from itertools import repeat
from operator import add
from typing import Any, NamedTuple, NoReturn

import orjson

from app.errors import PoisonError

_BOM = b"\xef\xbb\xbf"
_WS = b" \t\r\n"  # JSON whitespace (RFC 8259); nothing else is skipped
_NON_WS = re.compile(rb"[^ \t\r\n]")
_ORJSON_MAX_DUMP_DEPTH = 254  # orjson.dumps refuses anything deeper
_FAST_MISS_ALLOWANCE = 8  # NDJSON misses tolerated before the fast path is given up
_CHUNK_LINES = 1024  # NDJSON lines parsed by one orjson call on the fast path
# A NamedTuple's own constructor is a Python-level function: in the once-per-line paths
# the tuple is made directly (docs/benchmarks.md, S2 profile).
_tuple_new = tuple.__new__


class Item(NamedTuple):  # a tuple: built once per line of multi-MB files, it must be cheap
    """One transaction: ``value`` is compact JSON with the source's keys, order and numbers.

    In ``obj`` numbers are int/float on the fast path (they print as their source tokens)
    and ``orjson.Fragment`` otherwise: read them with ``orjson.dumps`` as ``output_key``
    does, never with arithmetic or isinstance checks.
    """

    value: bytes
    obj: dict[str, Any] | None


class _NonFinite(ValueError):
    """NaN, Infinity or -Infinity: the stdlib accepts them, JSON does not."""


def _reject_constant(token: str) -> NoReturn:
    raise _NonFinite(token)


# The stdlib hooks receive each number's exact token; a Fragment re-emits it verbatim.
_EXACT = json.JSONDecoder(
    parse_int=orjson.Fragment, parse_float=orjson.Fragment, parse_constant=_reject_constant
)


def parse_transactions(body: bytes, *, max_items: int, max_depth: int = 64,
                       keep_objects: bool = True) -> list[Item]:
    """Parse a decompressed file: a JSON array of objects, or NDJSON (one object a line).

    The whole file is poison if anything in it is; nothing is partly returned.
    Depth counts the item object as 1 (an enclosing array is not counted). Without
    ``keep_objects`` an NDJSON item's ``obj`` is None: a big file's parsed objects are
    the largest thing it makes, and only OUTPUT_KEY_FIELD needs them.
    """
    return _parse(body, max_items, max_depth, fast=True, keep=keep_objects)


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
    doc = _loads_exact(_decode(body, "the file", skipped), "the array", whole_file=True)
    if len(doc) > max_items:
        raise _too_many(max_items)
    return [_exact_item(obj, f"item {i} of the array", max_depth) for i, obj in enumerate(doc, 1)]


def _fast_array(core: bytes, max_items: int, max_depth: int) -> list[Item] | None:
    """Items whose values provably equal the source, or None to take the exact path."""
    try:
        doc = orjson.loads(core)
        if len(doc) > max_items or any(type(obj) is not dict for obj in doc):
            return None  # let the exact path name the problem
        values = [_owned(orjson.dumps(obj)) for obj in doc]
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    # Equal concatenation means every value is its source item's exact text.
    if b"[" + b",".join(values) + b"]" != core:
        return None
    if any(_too_deep(v, obj, max_depth) for v, obj in zip(values, doc, strict=True)):
        return None
    return [Item(v, obj) for v, obj in zip(values, doc, strict=True)]


def _parse_ndjson(body: bytes, max_items: int, max_depth: int, *, fast: bool,
                  keep: bool) -> list[Item]:
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
        _ndjson_lines(chunk, start, items, max_items, max_depth, fast=fast, keep=keep, rate=rate)
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
            obj = _loads_exact(_decode(line, where), where, whole_file=False)
            item = _exact_item(obj, where, max_depth)
            item = item if keep else Item(item.value, None)
        items.append(item)


def _fast_line(line: bytes, max_depth: int, keep: bool) -> Item | None:
    try:
        obj = orjson.loads(line)
        value = orjson.dumps(obj)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    if value != line or type(obj) is not dict or _too_deep(value, obj, max_depth):
        return None
    return _tuple_new(Item, (line, obj if keep else None))  # line equals value, sized to fit


_new_item = functools.partial(_tuple_new, Item)  # Item from a (value, obj) pair, in C


def _owned(value: bytes) -> bytes:
    """A copy of an orjson.dumps result that keeps only its own bytes: the original
    keeps orjson's whole write buffer (docs/benchmarks.md has the measurement), and
    items live until their transaction commits."""
    return memoryview(value).tobytes()


def _decode(data: bytes, where: str, offset: int = 0) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        at = offset + e.start
        raise PoisonError("invalid_utf8", f"{where}: invalid UTF-8 at byte {at}") from None


def _loads_exact(text: str, where: str, *, whole_file: bool) -> Any:
    try:
        return _EXACT.decode(text)
    except json.JSONDecodeError as e:
        at = f"line {e.lineno} column {e.colno}" if whole_file else f"column {e.colno}"
        raise PoisonError("invalid_json", f"{where}: invalid JSON at {at}: {e.msg}") from None
    except _NonFinite as e:
        raise PoisonError("invalid_json", f"{where}: {e} is not allowed in JSON") from None
    except RecursionError:
        # The C scanner recurses per level; running out of stack means far too deep.
        raise PoisonError("nesting_too_deep", f"{where}: too deeply nested to parse") from None


def _exact_item(obj: Any, where: str, max_depth: int) -> Item:
    if type(obj) is not dict:
        raise PoisonError("not_an_object", f"{where}: expected a JSON object, got {kind_of(obj)}")
    try:
        value = orjson.dumps(obj)
    except orjson.JSONEncodeError:
        # Either nesting past orjson's own limit, or a lone UTF-16 surrogate escape
        # (valid JSON syntax, but not representable as UTF-8).
        limit = min(max_depth, _ORJSON_MAX_DUMP_DEPTH)
        if _depth(obj, limit) > limit:
            raise _nesting(where, limit) from None
        raise PoisonError("invalid_json", f"{where}: string has an unpaired surrogate") from None
    if _too_deep(value, obj, max_depth):
        raise _nesting(where, max_depth)
    return Item(_owned(value), obj)


def _too_deep(value: bytes, obj: dict[str, Any], max_depth: int) -> bool:
    # Depth never exceeds the count of opening brackets, so most items skip the walk.
    if value.count(b"{") + value.count(b"[") <= max_depth:
        return False
    return _depth(obj, max_depth) > max_depth


def _depth(root: Any, limit: int) -> int:
    """Nesting depth of root (1 for a flat object), or limit + 1 once it exceeds limit."""
    deepest = 0
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        children = node.values() if type(node) is dict else node
        stack.extend((c, depth + 1) for c in children if type(c) in (dict, list))
    return deepest


def kind_of(value: Any) -> str:
    """A JSON value's kind, for error messages."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _too_many(max_items: int) -> PoisonError:
    return PoisonError("too_many_transactions", f"file has more than {max_items} transactions")


def _nesting(where: str, max_depth: int) -> PoisonError:
    return PoisonError("nesting_too_deep", f"{where}: nesting is deeper than {max_depth} levels")


def output_key(item: Item, key_field: str | None, url: str) -> bytes:
    """Kafka key: the URL, or the item's key field (strings raw, other values as JSON)."""
    if key_field is None:
        return url.encode("utf-8")
    try:
        value = item.obj[key_field]  # type: ignore[index]  # kept when a key field is set
    except KeyError:
        raise PoisonError("missing_key_field", f"item has no field {key_field!r}") from None
    if type(value) is str:
        return value.encode("utf-8")
    return _owned(orjson.dumps(value))
