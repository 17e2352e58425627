"""The exact path of the JSON parse, and the checks every item passes. Pure: no I/O.

Numbers must survive byte-for-byte (``1.50``, ``-0``, 30-digit integers): when orjson's
re-serialisation does not reproduce an item's source text, the item is parsed again
here, each number an ``orjson.Fragment`` of its source token. Every item, on either
path, must be an object no deeper than the parse's ``max_depth``.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import orjson

from app.errors import PoisonError
from app.files.item import Item, owned

_ORJSON_MAX_DUMP_DEPTH = 254  # orjson.dumps refuses anything deeper


class _NonFinite(ValueError):
    """NaN, Infinity or -Infinity: the stdlib accepts them, JSON does not."""


def _reject_constant(token: str) -> NoReturn:
    raise _NonFinite(token)


# The stdlib hooks receive each number's exact token; a Fragment re-emits it verbatim.
_EXACT = json.JSONDecoder(
    parse_int=orjson.Fragment, parse_float=orjson.Fragment, parse_constant=_reject_constant
)


def decode_utf8(data: bytes, where: str, offset: int = 0) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        at = offset + e.start
        raise PoisonError("invalid_utf8", f"{where}: invalid UTF-8 at byte {at}") from None


def loads_exact(text: str, where: str, *, whole_file: bool) -> Any:
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


def exact_item(obj: Any, where: str, max_depth: int) -> Item:
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
    if too_deep(value, obj, max_depth):
        raise _nesting(where, max_depth)
    return Item(owned(value), obj)


def too_deep(value: bytes, obj: dict[str, Any], max_depth: int) -> bool:
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


def _nesting(where: str, max_depth: int) -> PoisonError:
    return PoisonError("nesting_too_deep", f"{where}: nesting is deeper than {max_depth} levels")
