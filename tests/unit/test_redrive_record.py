"""The dead letter's re-drive fields: written by Preparer.dead_letter, read back by re-drive."""

from __future__ import annotations

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from app.config import load_settings
from app.errors import PoisonError
from app.files.budget import MemoryBudget
from app.files.prepare import Preparer
from app.ops.stats import Stats
from app.redrive.record import (
    INPUT_VALUE_LIMIT,
    carried_headers,
    read_dead_letter,
    redrive_count,
    redriven_headers,
)

URL = "http://files.example/a.ndjson"


def written(value: bytes | None, headers: list | None = None, url: str | None = URL):
    """The dead letter the service writes for an input record with this value."""
    msg = ConsumerRecord("in", 2, 40, 0, 0, b"key", value, None, 3, len(value or b""),
                         headers or [])
    settings = load_settings(["--dlq-topic", "dlq"], {})
    preparer = Preparer(settings, None, MemoryBudget(1 << 20), Stats())  # type: ignore[arg-type]
    return preparer.dead_letter(msg, url, PoisonError("http_error", "HTTP 404"), 2).records[0]


def read_back(record, offset: int = 7):
    return read_dead_letter(0, offset, 1000, record.key, record.value, record.headers)


@pytest.mark.parametrize("value", [
    URL.encode(),
    orjson.dumps(URL),
    orjson.dumps({"url": URL, "extra": [1, 2]}) + b"\n",
    b"\xff\xfe not utf-8 \x00",
    b"",
    None,
])
def test_the_input_value_comes_back_byte_for_byte(value: bytes | None) -> None:
    letter = read_back(written(value))
    assert letter.rebuildable and letter.value == value
    assert (letter.key, letter.reason, letter.redrives) == (b"key", "http_error", 0)
    assert (letter.source_topic, letter.source_partition) == ("in", 2)


def test_the_dead_letter_value_only_gains_the_input_field() -> None:
    doc = orjson.loads(written(b"\xff").value)
    assert doc == {"url": URL, "reason": "http_error", "error": "HTTP 404", "attempts": 2,
                   "source": {"topic": "in", "partition": 2, "offset": 40},
                   "input": {"value": "/w==", "encoding": "base64"}}


def test_an_input_too_large_to_copy_falls_back_to_the_url() -> None:
    record = written(b"x" * (INPUT_VALUE_LIMIT + 1))
    assert orjson.loads(record.value)["input"] == {"omitted": INPUT_VALUE_LIMIT + 1}
    assert read_back(record).value == URL.encode()
    assert not read_back(written(b"x" * (INPUT_VALUE_LIMIT + 1), url=None)).rebuildable
    assert read_back(written(b"x" * INPUT_VALUE_LIMIT)).value == b"x" * INPUT_VALUE_LIMIT


def test_the_redrive_count_header_is_carried_onto_the_dead_letter() -> None:
    record = written(URL.encode(), headers=[("trace", b"t"), ("redrive-count", b"2")])
    assert record.headers[-1] == ("redrive-count", b"2")
    assert [k for k, _ in record.headers].count("redrive-count") == 1
    assert "trace" not in dict(record.headers)
    assert read_back(record).redrives == 2
    assert "redrive-count" not in dict(written(URL.encode()).headers)


def test_older_dead_letters_are_rebuilt_from_their_url_or_reported() -> None:
    old = orjson.dumps({"url": URL, "reason": "http_error", "error": "e", "attempts": 1,
                        "source": {"topic": "in", "partition": 1, "offset": 3}})
    letter = read_dead_letter(0, 1, 0, b"k", old, [])
    assert (letter.rebuildable, letter.value, letter.reason) == (True, URL.encode(), "http_error")
    no_url = orjson.dumps({"url": None, "reason": "invalid_input_record"})
    assert not read_dead_letter(0, 1, 0, None, no_url, []).rebuildable
    for junk in (b"not json", b"[1]", None, orjson.dumps({"input": {"value": 3}})):
        unreadable = read_dead_letter(0, 1, 0, None, junk, [])
        assert not unreadable.rebuildable
        assert unreadable.reason == "unreadable" and unreadable.source_partition is None


def test_a_broken_base64_input_falls_back_to_the_url() -> None:
    doc = {"url": URL, "reason": "r", "input": {"value": "***", "encoding": "base64"}}
    assert read_dead_letter(0, 1, 0, None, orjson.dumps(doc), []).value == URL.encode()


@pytest.mark.parametrize("headers, count", [
    ([], 0), ([("redrive-count", b"4")], 4), ([("redrive-count", b"x")], 0),
    ([("redrive-count", b"-2")], 0), ([("other", b"1"), ("redrive-count", b"1")], 1),
])
def test_redrive_count(headers: list, count: int) -> None:
    assert redrive_count(headers) == count


def test_carried_headers_keep_only_the_first_redrive_count() -> None:
    assert carried_headers([("a", b"1"), ("redrive-count", b"1"), ("redrive-count", b"9")]) == [
        ("redrive-count", b"1")]
    assert carried_headers(None) == []


def test_a_re_driven_record_counts_one_more_and_names_its_dead_letter() -> None:
    letter = read_back(written(URL.encode(), headers=[("redrive-count", b"1")]), offset=99)
    assert redriven_headers(letter, "dlq") == [("redrive-count", b"2"),
                                               ("redrive-from", b"dlq:0:99")]
