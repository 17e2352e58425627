"""app/files/resume.py: when a cut-off download may ask for the rest, what it asks, and
what each answer lets it do; and the memory meter starting over with the body."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from app.files.budget import MemoryBudget
from app.files.meter import BODY_COST, Meter
from app.files.resume import MAX_RESUMES, Answer, Transfer

ETAG = '"v1-100"'
DATE = "Tue, 07 Dec 2026 12:00:00 GMT"
EARLIER = "Mon, 06 Dec 2026 12:00:00 GMT"
RANGES = {"Accept-Ranges": "bytes", "Content-Length": "100"}


def of(headers: dict[str, str]) -> Transfer:
    """The transfer a response with ``headers`` starts (case-insensitive, as aiohttp's)."""
    return Transfer.of(CIMultiDict(headers))


@pytest.mark.parametrize(("headers", "validator"), [
    ({**RANGES, "ETag": ETAG}, ETAG),
    ({**RANGES, "ETag": ETAG, "Last-Modified": EARLIER, "Date": DATE}, ETAG),
    ({**RANGES, "Last-Modified": EARLIER, "Date": DATE}, EARLIER),
    ({**RANGES, "ETag": 'W/"weak"', "Last-Modified": EARLIER, "Date": DATE}, EARLIER),
    ({"Accept-Ranges": "none, bytes", "ETag": ETAG}, ETAG),
    ({"accept-ranges": "BYTES", "etag": ETAG}, ETAG),
])
def test_a_response_that_offers_byte_ranges_and_a_strong_validator_may_resume(headers, validator):
    transfer = of(headers)
    assert transfer.validator == validator and transfer.may_resume()


@pytest.mark.parametrize("headers", [
    {"ETag": ETAG, "Content-Length": "100"},                          # ranges not offered
    {"Accept-Ranges": "none", "ETag": ETAG},
    {"Accept-Ranges": "bytes"},                                       # nothing for If-Range
    {"Accept-Ranges": "bytes", "ETag": 'W/"weak"'},                   # If-Range takes no weak tag
    {"Accept-Ranges": "bytes", "ETag": "unquoted"},
    {"Accept-Ranges": "bytes", "Last-Modified": EARLIER},             # no Date: a weak date
    {"Accept-Ranges": "bytes", "Last-Modified": DATE, "Date": DATE},  # changed within its second?
    {"Accept-Ranges": "bytes", "Last-Modified": "yesterday", "Date": DATE},
], ids=["no-accept-ranges", "ranges-none", "no-validator", "weak-etag", "unquoted-etag",
        "date-without-date", "same-second", "unparsable-date"])
def test_no_resume_without_byte_ranges_and_a_strong_validator(headers):
    assert not of(headers).may_resume()


def test_the_request_asks_for_the_rest_if_the_file_is_the_same():
    transfer = of({**RANGES, "ETag": ETAG})
    transfer.received = 40
    assert transfer.request_headers() == {"Range": "bytes=40-", "If-Range": ETAG}


def test_resumes_are_bounded_per_attempt():
    transfer = of({**RANGES, "ETag": ETAG})
    transfer.resumes = MAX_RESUMES - 1
    assert transfer.may_resume()
    transfer.resumes = MAX_RESUMES
    assert not transfer.may_resume()


def part(start: int, total: str = "100", **headers: str) -> CIMultiDict[str]:
    """A 206's headers: bytes ``start`` to 99 of ``total``."""
    return CIMultiDict({"Content-Range": f"bytes {start}-99/{total}", **headers})


def at(received: int, **headers: str) -> Transfer:
    transfer = of({**RANGES, "ETag": ETAG, **headers})
    transfer.received = received
    return transfer


@pytest.mark.parametrize(("status", "headers", "answer"), [
    (206, part(40), Answer.CONTINUE),
    (206, part(40, ETag=ETAG), Answer.CONTINUE),
    (206, part(40, total="*"), Answer.CONTINUE),
    (206, {"Content-Range": "BYTES 40-99/100"}, Answer.CONTINUE),
    (200, {"ETag": '"v2-120"'}, Answer.START_OVER),
    (206, part(0), Answer.GIVE_UP),                        # not where it stopped
    (206, part(41), Answer.GIVE_UP),
    (206, part(40, total="120"), Answer.GIVE_UP),          # another length: another file
    (206, part(40, ETag='"v2-100"'), Answer.GIVE_UP),      # If-Range ignored, file changed
    (206, part(40, ETag=f"W/{ETAG}"), Answer.GIVE_UP),
    (206, part(40, **{"Content-Encoding": "gzip"}), Answer.GIVE_UP),  # other bytes
    (206, {"Content-Type": "multipart/byteranges; boundary=x"}, Answer.GIVE_UP),
    (416, {"Content-Range": "bytes */100"}, Answer.GIVE_UP),
    (302, {"Location": "/elsewhere"}, Answer.GIVE_UP),
    (503, {}, Answer.GIVE_UP),
])
def test_what_an_answer_to_the_range_request_allows(status, headers, answer):
    assert at(40).answer(status, CIMultiDict(headers)) is answer


def test_a_gzip_body_continues_only_as_gzip():
    gzip = {"Content-Encoding": "gzip"}
    transfer = at(40, **gzip)
    assert transfer.answer(206, part(40, **gzip)) is Answer.CONTINUE
    assert transfer.answer(206, part(40)) is Answer.GIVE_UP


def test_a_date_validator_is_checked_against_the_part_s_last_modified():
    transfer = of({**RANGES, "Last-Modified": EARLIER, "Date": DATE})
    transfer.received = 40
    assert transfer.answer(206, part(40, **{"Last-Modified": EARLIER})) is Answer.CONTINUE
    assert transfer.answer(206, part(40, ETag='"any"')) is Answer.CONTINUE
    assert transfer.answer(206, part(40, **{"Last-Modified": DATE})) is Answer.GIVE_UP


def test_starting_over_counts_from_the_first_byte_with_the_new_validator():
    transfer = at(40)
    transfer.resumes = 1
    transfer.start_over(CIMultiDict({"Accept-Ranges": "bytes", "ETag": '"v2-120"',
                                      "Content-Length": "120"}))
    assert (transfer.received, transfer.resumes) == (0, 1)
    assert (transfer.validator, transfer.length) == ('"v2-120"', 120)
    transfer.start_over(CIMultiDict({"Content-Length": "120"}))  # the new answer offers no ranges
    assert not transfer.may_resume()


def test_the_meter_counts_a_body_that_starts_over_from_nothing():
    reservation = MemoryBudget(1_000_000).reservation()
    meter = Meter(reservation, "http://files.example/f.json")
    meter.described("http://files.example/f.json", "application/json")
    meter.count(b"x" * 1000)
    meter.described("http://files.example/f.json", "application/json")  # started over
    meter.count(b"x" * 600)
    assert meter.cost == BODY_COST * 600
    assert reservation.held == BODY_COST * 1000  # what it held stays; it grows past that
