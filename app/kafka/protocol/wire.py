"""Wire types aiokafka 0.14 gets wrong or lacks, on top of its own.

aiokafka's ``TaggedFields.encode`` leaves out each field's size and refuses tag 0, so
any non-empty tagged fields it writes are unreadable; decoding is right. Requests
here only ever send empty tagged fields, but through this class, so a future tagged
field is written as Kafka reads it: count, then per tag (ascending) tag, size, bytes.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int64,
    Schema,
    UnsignedVarInt32,
)
from aiokafka.protocol.types import TaggedFields as _AiokafkaTaggedFields

COMPACT_STRING = CompactString("utf-8")


class TaggedFields(_AiokafkaTaggedFields):
    @classmethod
    def encode(cls, value: dict[int, bytes]) -> bytes:
        parts = [UnsignedVarInt32.encode(len(value))]
        for tag in sorted(value):
            data = value[tag]
            if not isinstance(tag, int) or tag < 0 or not isinstance(data, bytes):
                raise ValueError(f"a tagged field is a tag >= 0 and bytes, not {tag!r}")
            parts += [UnsignedVarInt32.encode(tag), UnsignedVarInt32.encode(len(data)), data]
        return b"".join(parts)


def flexible(*fields: tuple[str, Any]) -> Schema:
    """A flexible version's struct: its fields, then its tagged fields."""
    return Schema(*fields, ("tags", TaggedFields))


def compact_array(*fields: tuple[str, Any]) -> CompactArray:
    """A compact array of flexible structs (each item ends in its tagged fields)."""
    return CompactArray(*fields, ("tags", TaggedFields))


def decode_tagged(tags: dict[int, bytes], tag: int, kind: Any, default: Any) -> Any:
    """One known tagged field's value, or ``default`` when the sender left it out."""
    if tag not in tags:
        return default
    return kind.decode(BytesIO(tags[tag]))


__all__ = ["COMPACT_STRING", "Boolean", "Int16", "Int64", "TaggedFields", "compact_array",
           "decode_tagged", "flexible"]
