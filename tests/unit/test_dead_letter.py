"""Dead letters built to fit the record size limit (app/files/dead_letter.py), the input URL
limit, and what re-drive does with a dead letter that was cut."""

from __future__ import annotations

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from app.errors import PoisonError
from app.files.budget import MemoryBudget
from app.files.input_url import parse_input_url
from app.files.prepare import RECORD_OVERHEAD, Preparer
from app.ops.stats import Stats
from app.redrive.command import report
from app.redrive.job import Options, Selection, Tally, Verdict, judge
from app.redrive.record import INPUT_VALUE_LIMIT, carried_headers, read_dead_letter
from tests.unit.fakes import FileDownloader, Sleeps, record, settings

URL = "http://files.example/a.ndjson"
LIMIT = 20_000  # MAX_RECORD_BYTES in these tests


def msg(value: bytes | None, key: bytes | None = b"key", headers: list | None = None
        ) -> ConsumerRecord:
    return ConsumerRecord("in", 2, 40, 0, 0, key, value, None, len(key or b""),
                          len(value or b""), headers or [])


def written(message: ConsumerRecord, url: str | None = URL, error: str = "HTTP 404",
            limit: int = LIMIT):
    preparer = Preparer(settings("--dlq-topic", "dlq", "--max-record-bytes", str(limit)),
                        None, MemoryBudget(1 << 20), Stats())  # type: ignore[arg-type]
    return preparer.dead_letter(message, url, PoisonError("http_error", error), 3).records[0]


def size(r) -> int:
    return len(r.key or b"") + len(r.value) + sum(len(k) + len(v) for k, v in r.headers)


def read_back(r):
    return read_dead_letter(0, 9, 1000, r.key, r.value, r.headers)


LONG_URL = URL + "?q=" + "u" * 30_000
# Input record, URL, error -> what is cut: first what re-drive can do without (the copy of
# the input, the source-url header), then the longest of the error, the URL and the key.
CASES = {
    "a key": (msg(URL.encode(), key=b"k" * 50_000), URL, "HTTP 404",
              {"input", "source-url", "key"}),
    "a url": (msg(LONG_URL.encode()), LONG_URL, "HTTP 404", {"input", "source-url", "url"}),
    "escapes": (msg(b"\x01" * INPUT_VALUE_LIMIT), None, "not a URL", {"input"}),
    "everything": (msg(LONG_URL.encode(), key=b"k" * 50_000), LONG_URL, "e" * 5000,
                   {"input", "source-url", "url", "key"}),
}


@pytest.mark.parametrize("case", CASES)
def test_a_dead_letter_is_cut_to_fit_and_says_what_was_cut(case: str) -> None:
    message, url, error, cut = CASES[case]
    r = written(message, url, error)
    assert size(r) <= LIMIT - RECORD_OVERHEAD
    doc = orjson.loads(r.value)
    assert set(doc["truncated"]) == cut
    assert (doc["reason"], doc["attempts"]) == ("http_error", 3)
    assert doc["source"] == {"topic": "in", "partition": 2, "offset": 40}
    assert dict(r.headers)["source-offset"] == b"40"
    sizes = {"key": len(message.key or b""), "input": len(message.value or b""),
             "url": len(url or ""), "error": len(error[:2000]), "source-url": len(url or "")}
    assert doc["truncated"] == {field: sizes[field] for field in cut}


def test_only_what_is_over_is_cut_in_order_input_first() -> None:
    whole = written(msg(URL.encode(), key=b"k" * 1000), limit=1 << 20)
    just = size(whole) + RECORD_OVERHEAD
    assert written(msg(URL.encode(), key=b"k" * 1000), limit=just).value == whole.value
    over = written(msg(URL.encode(), key=b"k" * 1000), limit=just - 1)
    doc = orjson.loads(over.value)
    assert doc["truncated"] == {"input": len(URL)} and doc["url"] == URL
    assert over.key == b"k" * 1000 and dict(over.headers)["source-url"] == URL.encode()


def test_the_cut_url_is_its_start() -> None:
    doc = orjson.loads(written(msg(LONG_URL.encode()), LONG_URL).value)
    assert LONG_URL.startswith(doc["url"]) and len(doc["url"]) > LIMIT // 2


def test_an_ordinary_dead_letter_is_not_marked() -> None:
    assert "truncated" not in orjson.loads(written(msg(URL.encode())).value)


def test_a_hostile_redrive_count_header_is_carried_as_its_number() -> None:
    assert carried_headers([("redrive-count", b"9" * 500_000)]) == [("redrive-count", b"0")]
    assert carried_headers([("redrive-count", b"2")]) == [("redrive-count", b"2")]
    r = written(msg(URL.encode(), headers=[("redrive-count", b"x" * 500_000)]))
    assert dict(r.headers)["redrive-count"] == b"0" and size(r) < 1000


# -- re-drive -------------------------------------------------------------------------------

# "a key": part of a key is another key (another partition, another order); "a url":
# neither the input nor the whole URL is left.
@pytest.mark.parametrize("case", ["a key", "a url", "everything"])
def test_a_letter_whose_input_cannot_be_rebuilt_is_not_redriven(case: str) -> None:
    message, url, error, _ = CASES[case]
    letter = read_back(written(message, url, error))
    assert not letter.rebuildable
    assert judge(letter, Selection(), 3) is Verdict.UNRECOVERABLE
    tally = Tally()
    tally.count(letter, Verdict.UNRECOVERABLE)
    lines = report(tally, Options(selection=Selection(), job="j"), "dlq")
    assert lines[0].startswith("cannot re-drive (the dead letter kept no whole input value")
    assert lines[1].endswith("truncated=" + ",".join(sorted(CASES[case][3])))


def test_a_letter_that_only_lost_its_input_copy_is_rebuilt_from_its_url() -> None:
    letter = read_back(written(msg(URL.encode(), key=b"k" * 1000),
                               limit=size(written(msg(URL.encode(), key=b"k" * 1000),
                                              limit=1 << 20)) + RECORD_OVERHEAD - 1))
    assert letter.truncated == ("input",) and letter.rebuildable
    assert letter.value == URL.encode() and letter.key == b"k" * 1000


def test_a_letter_whose_url_was_cut_but_input_kept_sends_the_input() -> None:
    doc = {"url": URL[:10], "reason": "http_error", "truncated": {"url": len(URL)},
           "input": {"value": URL, "encoding": "utf-8"}}
    letter = read_dead_letter(0, 1, 0, b"k", orjson.dumps(doc), [])
    assert letter.rebuildable and letter.value == URL.encode()


# -- the URL limit --------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "http://files/" + "a" * 8180,                       # 8193 bytes
    orjson.dumps({"url": "http://files/" + "é" * 4090}).decode(),  # 8193 in UTF-8
])
async def test_a_url_over_max_url_bytes_is_dead_lettered_and_never_downloaded(value) -> None:
    downloader = FileDownloader({})
    preparer = Preparer(settings(), downloader, MemoryBudget(1 << 20), Stats(),  # type: ignore[arg-type]
                        sleep=Sleeps())
    prepared = await preparer.prepare(record(0, value))
    assert prepared.reason == "url_too_long" and downloader.requests == []
    doc = orjson.loads(prepared.records[0].value)
    assert doc["error"] == "the URL is 8193 bytes; MAX_URL_BYTES is 8192"


async def test_a_url_of_max_url_bytes_is_downloaded() -> None:
    url = "http://files/" + "a" * 8179  # 8192 bytes
    downloader = FileDownloader({url: b'{"a":1}'})
    preparer = Preparer(settings(), downloader, MemoryBudget(1 << 20), Stats(),  # type: ignore[arg-type]
                        sleep=Sleeps())
    assert not (await preparer.prepare(record(0, url))).dead_lettered
    assert downloader.requests == [url]


def test_a_long_value_that_is_no_url_is_an_invalid_input_record() -> None:
    with pytest.raises(PoisonError) as caught:
        parse_input_url(b"not a url " * 1000)
    assert caught.value.reason == "invalid_input_record"
    with pytest.raises(PoisonError) as caught:
        parse_input_url(b"http://files/" + b"a" * 100, max_bytes=100)
    assert caught.value.reason == "url_too_long"
