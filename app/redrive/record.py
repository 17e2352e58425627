"""The dead letter's re-drive fields, written by the service and read back by re-drive.

The service adds to each dead letter (additively, see docs/redrive.md):

- ``"input": {"value": <the input record's value>, "encoding": "utf-8" | "base64"}``
  (``value`` null for a null value; ``{"omitted": <size>}`` instead over INPUT_VALUE_LIMIT
  or when the dead letter had to be cut to fit, app/files/dead_letter.py);
- the input record's ``redrive-count`` header, if it had one, as its number.

Re-drive reads every generation of dead letters: one without ``input`` is rebuilt
from its ``url`` (the URL as plain text); one without either cannot be re-driven, nor
can one whose key, or whose URL with no input kept, was cut (its ``truncated`` field):
re-sending part of an input would send another input.
Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

Headers = list[tuple[str, bytes]]
REDRIVE_COUNT = "redrive-count"
REDRIVE_FROM = "redrive-from"
# A larger input value is not a URL record; copying it could push the dead letter
# past the broker's record size limit (and base64 grows it by a third).
INPUT_VALUE_LIMIT = 64 * 1024


# -- written by the service (app/files/prepare.py Preparer.dead_letter) ----------------------------

def input_field(value: bytes | None) -> dict[str, object]:
    """The original input value as the dead letter's ``input`` field."""
    if value is None:
        return {"value": None, "encoding": "utf-8"}
    if len(value) > INPUT_VALUE_LIMIT:
        return {"omitted": len(value)}
    try:
        return {"value": value.decode("utf-8"), "encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"value": base64.b64encode(value).decode("ascii"), "encoding": "base64"}


def carried_headers(input_headers: Sequence[tuple[str, bytes]] | None) -> Headers:
    """The input headers a dead letter keeps: its redrive count, as a number (the header
    as it came could be anything, of any size)."""
    if not any(k == REDRIVE_COUNT for k, _ in input_headers or ()):
        return []
    return [(REDRIVE_COUNT, str(redrive_count(input_headers)).encode())]


# -- read by re-drive ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int        # where the dead letter is, on the DLQ
    offset: int
    timestamp_ms: int
    key: bytes | None     # the input record's key
    reason: str           # "unreadable" when the value is not a dead letter
    url: str | None
    rebuildable: bool     # False: neither the input value nor the URL was kept whole
    value: bytes | None   # the input record's value, as it was (or rebuilt from url)
    redrives: int         # times the input had been re-driven before it failed
    source_topic: str | None
    source_partition: int | None
    truncated: tuple[str, ...] = ()  # the dead letter's fields cut to fit the size limit


def read_dead_letter(partition: int, offset: int, timestamp_ms: int, key: bytes | None,
                     value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> DeadLetter:
    """What re-drive needs from a DLQ record, whichever service version wrote it."""
    doc = _load(value)
    source = doc.get("source")
    source = source if isinstance(source, dict) else {}
    url = doc.get("url") if isinstance(doc.get("url"), str) else None
    reason = doc.get("reason")
    truncated = doc.get("truncated")
    cut = tuple(sorted(truncated)) if isinstance(truncated, dict) else ()
    rebuildable, original = _original_value(doc.get("input"), None if "url" in cut else url)
    topic, source_partition = source.get("topic"), source.get("partition")
    return DeadLetter(
        partition=partition, offset=offset, timestamp_ms=timestamp_ms, key=key,
        reason=reason if isinstance(reason, str) else "unreadable", url=url,
        rebuildable=rebuildable and "key" not in cut, value=original,
        redrives=redrive_count(headers), source_topic=topic if isinstance(topic, str) else None,
        source_partition=source_partition if type(source_partition) is int else None,
        truncated=cut)


def redrive_count(headers: Sequence[tuple[str, bytes]] | None) -> int:
    """The ``redrive-count`` header as a number; 0 when absent or not a number."""
    for k, v in headers or ():
        if k == REDRIVE_COUNT:
            try:
                return max(0, int(v.decode("ascii")))
            except (UnicodeDecodeError, ValueError):
                return 0
    return 0


def redriven_headers(letter: DeadLetter, dlq_topic: str) -> Headers:
    """Headers of the input record a dead letter goes back as."""
    return [(REDRIVE_COUNT, str(letter.redrives + 1).encode()),
            (REDRIVE_FROM, f"{dlq_topic}:{letter.partition}:{letter.offset}".encode())]


def _original_value(field: object, url: str | None) -> tuple[bool, bytes | None]:
    """(True, the input value), else (True, the URL as text), else (False, None)."""
    if isinstance(field, dict) and "value" in field:
        value = field["value"]
        if value is None:
            return True, None
        if isinstance(value, str) and field.get("encoding") == "base64":
            try:
                return True, base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                pass
        elif isinstance(value, str):
            return True, value.encode("utf-8")
    return (True, url.encode("utf-8")) if url is not None else (False, None)


def _load(value: bytes | None) -> dict:
    try:
        doc = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}

