"""Preparer.outputs: the records a parsed file becomes, and what they count (pure logic)."""

from __future__ import annotations

import pytest
from aiokafka.structs import ConsumerRecord

from app.config import load_settings
from app.errors import PoisonError
from app.files.budget import MemoryBudget
from app.files.parse import parse_transactions
from app.files.prepare import HELD_RECORD_OVERHEAD, RECORD_OVERHEAD, Preparer
from app.ops.stats import Stats

URL = "http://files.example/ledger.ndjson"
MSG = ConsumerRecord("in", 3, 1234, 0, 0, b"k", URL.encode(), None, 1, 10, [])
# Twelve items, so indexes have one and two digits.
ITEMS = parse_transactions(b"\n".join(b'{"id":%d,"v":"%s"}' % (i, b"x" * i) for i in range(12)),
                           max_items=100)


def preparer(*args: str) -> Preparer:
    settings = load_settings(["--output-topic", "out", *args], {})
    return Preparer(settings, None, MemoryBudget(1 << 30), Stats())  # type: ignore[arg-type]


def record_size(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    return len(key or b"") + len(value) + sum(len(k) + len(v) for k, v in headers)


def test_each_record_carries_its_source_position_and_the_file_count() -> None:
    prepared = preparer().outputs(MSG, URL, ITEMS, attempts=2)
    assert [r.value for r in prepared.each_record()] == [item.value for item in ITEMS]
    for index, r in enumerate(prepared.each_record()):
        assert (r.topic, r.key) == ("out", URL.encode())
        assert r.headers == [("source-topic", b"in"), ("source-partition", b"3"),
                             ("source-offset", b"1234"), ("source-url", URL.encode()),
                             ("index", str(index).encode()), ("count", b"12")]
    assert (prepared.dead_lettered, prepared.attempts) == (False, 2)


def test_held_bytes_are_every_record_s_bytes_plus_its_objects() -> None:
    p = preparer()
    prepared = p.outputs(MSG, URL, ITEMS, attempts=1, reservation=p.budget.reservation())
    want = sum(record_size(r.key, r.value, r.headers) + HELD_RECORD_OVERHEAD
               for r in prepared.each_record())
    assert prepared.nbytes == want
    assert p.budget.used == want


@pytest.mark.parametrize("slack, fits", [(0, True), (-1, False)])
def test_the_largest_record_is_measured_to_the_byte(slack: int, fits: bool) -> None:
    largest = max(record_size(r.key, r.value, r.headers)
                  for r in preparer().outputs(MSG, URL, ITEMS, attempts=1).each_record())
    p = preparer("--max-record-bytes", str(largest + RECORD_OVERHEAD + slack))
    if fits:
        assert p.outputs(MSG, URL, ITEMS, attempts=1).count == len(ITEMS)
    else:
        with pytest.raises(PoisonError) as caught:
            p.outputs(MSG, URL, ITEMS, attempts=1)
        assert caught.value.reason == "record_too_large"
        assert "transaction 11 " in caught.value.message

