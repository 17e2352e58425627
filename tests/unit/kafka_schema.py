"""Kafka's own message definitions (common/message/*.json in the kafka-clients jar),
read and applied as Kafka's generated code does: a reference codec for the
protocol layer's tests, independent of aiokafka's types and of ours.

Values are dicts keyed by the definitions' field names; a field left out takes its
default. Covers what the transaction messages use: ints, bool, string, bytes,
records, uuid, arrays, structs, nullable and tagged fields, flexible versions.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

_FIXED = {"int8": ">b", "int16": ">h", "uint16": ">H", "int32": ">i", "int64": ">q",
          "float64": ">d", "bool": ">?"}
_DEFAULTS = {"string": "", "bytes": b"", "records": None, "uuid": bytes(16), "bool": False}


def load(jar: Path, name: str) -> dict:
    """One message definition from the jar, comments removed."""
    with zipfile.ZipFile(jar) as archive:
        text = archive.read(f"common/message/{name}.json").decode()
    return json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.M))


def in_range(spec: str | None, version: int) -> bool:
    if not spec or spec == "none":
        return False
    if spec.endswith("+"):
        return version >= int(spec[:-1])
    low, _, high = spec.partition("-")
    return int(low) <= version <= int(high or low)


def snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_uvarint(data: BytesIO) -> int:
    value = shift = 0
    while True:
        byte = data.read(1)[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7


class Message:
    """One message at one version."""

    def __init__(self, definition: dict, version: int) -> None:
        if not in_range(definition["validVersions"], version):
            raise ValueError(f"{definition['name']} has no v{version}")
        self.definition, self.version = definition, version
        self.flexible = in_range(definition.get("flexibleVersions"), version)
        self.common = {s["name"]: s["fields"] for s in definition.get("commonStructs", [])}

    def encode(self, value: dict) -> bytes:
        return self._encode_struct(self.definition["fields"], value)

    def decode(self, data: bytes) -> dict:
        buffer = BytesIO(data)
        value = self._decode_struct(self.definition["fields"], buffer)
        assert buffer.read() == b"", "bytes left over after the message"
        return value

    def plain(self, value: dict, fields: list[dict] | None = None) -> dict:
        """``value`` with snake_case names, as the layer's structs name fields, and
        without tagged fields (a struct holds those as raw ``tags``)."""
        out = {}
        for f in self._present(self.definition["fields"] if fields is None else fields):
            if self._tagged(f):
                continue
            item, kind = value[f["name"]], f["type"]
            if (kind.startswith("[]") and kind[2:] not in (*_FIXED, "string")
                    and item is not None):
                item = [self.plain(x, self._fields(f, kind[2:])) for x in item]
            out[snake(f["name"])] = item
        return out

    def _present(self, fields: list[dict]) -> list[dict]:
        return [f for f in fields if in_range(f["versions"], self.version)]

    def _tagged(self, f: dict) -> bool:
        return "tag" in f and in_range(f.get("taggedVersions", f["versions"]), self.version)

    def _default(self, f: dict) -> Any:
        default, kind = f.get("default"), f["type"]
        if kind.startswith("[]"):
            return []
        if default == "null":
            return None
        if default is None:
            return _DEFAULTS.get(kind, 0 if kind in _FIXED else {})
        return default == "true" if kind == "bool" else (
            int(default) if kind in _FIXED else default)

    def _encode_struct(self, fields: list[dict], value: dict) -> bytes:
        out, tagged = [], []
        for f in self._present(fields):
            item = value.get(f["name"], self._default(f))
            if self._tagged(f):
                if item != self._default(f):
                    tagged.append((f["tag"], self._encode(f, item)))
            else:
                out.append(self._encode(f, item))
        if self.flexible:
            out.append(uvarint(len(tagged)))
            for tag, data in sorted(tagged):
                out += [uvarint(tag), uvarint(len(data)), data]
        return b"".join(out)

    def _decode_struct(self, fields: list[dict], data: BytesIO) -> dict:
        value: dict = {}
        present = self._present(fields)
        for f in present:
            if self._tagged(f):
                value[f["name"]] = self._default(f)
            else:
                value[f["name"]] = self._decode(f, data)
        if self.flexible:
            by_tag = {f["tag"]: f for f in present if self._tagged(f)}
            for _ in range(read_uvarint(data)):
                tag, size = read_uvarint(data), read_uvarint(data)
                field = by_tag[tag]  # a tag this version does not define is an error here
                value[field["name"]] = self._decode(field, BytesIO(data.read(size)))
        return value

    def _nullable(self, f: dict) -> bool:
        return in_range(f.get("nullableVersions"), self.version)

    def _length(self, length: int | None, wide: bool) -> bytes:
        if self.flexible:
            return uvarint(0 if length is None else length + 1)
        return struct.pack(">i" if wide else ">h", -1 if length is None else length)

    def _read_length(self, data: BytesIO, wide: bool) -> int | None:
        if self.flexible:
            length = read_uvarint(data) - 1
        else:
            length = struct.unpack(">i" if wide else ">h", data.read(4 if wide else 2))[0]
        return None if length < 0 else length

    def _encode(self, f: dict, item: Any, kind: str | None = None) -> bytes:
        kind = kind or f["type"]
        if kind in _FIXED:
            return struct.pack(_FIXED[kind], item)
        if kind == "uuid":
            return item
        if item is None:
            assert self._nullable(f) or kind == "records", f"{f['name']} is not nullable"
            return self._length(None, wide=kind != "string")
        if kind == "string":
            raw = item.encode()
            return self._length(len(raw), wide=False) + raw
        if kind in ("bytes", "records"):
            return self._length(len(item), wide=True) + item
        if kind.startswith("[]"):
            inner = kind[2:]
            parts = [self._encode(f, x, inner) if inner in _FIXED or inner == "string"
                     else self._encode_struct(self._fields(f, inner), x) for x in item]
            return self._length(len(item), wide=True) + b"".join(parts)
        return self._encode_struct(self._fields(f, kind), item)

    def _decode(self, f: dict, data: BytesIO, kind: str | None = None) -> Any:
        kind = kind or f["type"]
        if kind in _FIXED:
            size = struct.calcsize(_FIXED[kind])
            return struct.unpack(_FIXED[kind], data.read(size))[0]
        if kind == "uuid":
            return data.read(16)
        if kind.startswith("[]"):
            length, inner = self._read_length(data, wide=True), kind[2:]
            if length is None:
                return None
            if inner in _FIXED or inner == "string":
                return [self._decode(f, data, inner) for _ in range(length)]
            return [self._decode_struct(self._fields(f, inner), data) for _ in range(length)]
        if kind in ("string", "bytes", "records"):
            length = self._read_length(data, wide=kind != "string")
            if length is None:
                return None
            raw = data.read(length)
            return raw.decode() if kind == "string" else raw
        return self._decode_struct(self._fields(f, kind), data)

    def _fields(self, f: dict, kind: str) -> list[dict]:
        return f["fields"] if "fields" in f else self.common[kind]
