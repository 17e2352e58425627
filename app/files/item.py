"""One transaction as parsed from a file, and its Kafka key. Pure: no I/O."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from app.errors import PoisonError


class Item(NamedTuple):  # a tuple: built once per line of multi-MB files, it must be cheap
    """One transaction: ``value`` is compact JSON with the source's keys, order and numbers.

    In ``obj`` numbers are int/float on the fast path (they print as their source tokens)
    and ``orjson.Fragment`` otherwise: read them with ``orjson.dumps`` as ``output_key``
    does, never with arithmetic or isinstance checks.
    """

    value: bytes
    obj: dict[str, Any] | None


def owned(value: bytes) -> bytes:
    """A copy of an orjson.dumps result that keeps only its own bytes: the original
    keeps orjson's whole write buffer (docs/benchmarks.md has the measurement), and
    items live until their transaction commits."""
    return memoryview(value).tobytes()


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
    return owned(orjson.dumps(value))
