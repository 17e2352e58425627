"""Resuming a download cut off half-way: a Range request for the rest, made only where
the first response showed the server can serve one and named a validator for If-Range
(RFC 9110, sections 13.1.5 and 14).

Pure header logic; app/files/fetch.py makes the requests. A range counts the bytes as
sent, Content-Encoding included, so a gzip body inflates on from where it stopped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parsedate_to_datetime
from enum import Enum

from aiohttp import hdrs

# Range requests per download attempt, at most. A constant, not a setting: whatever it
# is, DOWNLOAD_TOTAL_TIMEOUT_S and MAX_FILE_BYTES still bound the attempt, and a server
# that cuts every connection should fail the attempt soon and meet the retry backoff.
MAX_RESUMES = 3

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)


class Answer(Enum):
    """What the answer to a Range request lets the download do."""

    CONTINUE = "continue"      # a 206 with the rest of the same bytes
    START_OVER = "start_over"  # a 200: the whole file again (changed, or no ranges)
    GIVE_UP = "give_up"        # anything else: the attempt fails as it was failing


def strong_etag(headers: Mapping[str, str]) -> str | None:
    """The response's ETag if it is a strong one (If-Range may name no weak one)."""
    etag = headers.get(hdrs.ETAG, "").strip()
    if len(etag) < 2 or not (etag.startswith('"') and etag.endswith('"')):
        return None
    return etag


def strong_date(headers: Mapping[str, str]) -> str | None:
    """Last-Modified, if it is a strong validator: at least a second before the response's
    Date (RFC 9110, 8.8.2.2); an older file cannot have changed within its second."""
    modified, date = headers.get(hdrs.LAST_MODIFIED), headers.get(hdrs.DATE)
    if not modified or not date:
        return None
    try:
        if parsedate_to_datetime(date) - parsedate_to_datetime(modified) < timedelta(seconds=1):
            return None
    except (TypeError, ValueError):
        return None
    return modified


def _encoding(headers: Mapping[str, str]) -> str:
    return headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()


@dataclass
class Transfer:
    """Where a download stands: the bytes received as sent (before decoding), what a
    Range request may name for them, and how often it was resumed in this attempt."""

    validator: str | None  # for If-Range: a strong ETag, else a strong Last-Modified
    encoding: str          # the Content-Encoding those bytes are in
    length: int | None     # all of them, if the response said
    received: int = 0
    resumes: int = 0

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Transfer:
        """The transfer a 200 response starts; resumable only if it offered byte ranges."""
        ranges = headers.get(hdrs.ACCEPT_RANGES, "").lower()
        offered = "bytes" in (unit.strip() for unit in ranges.split(","))
        validator = (strong_etag(headers) or strong_date(headers)) if offered else None
        length = headers.get(hdrs.CONTENT_LENGTH, "")
        return cls(validator, _encoding(headers), int(length) if length.isdigit() else None)

    def start_over(self, headers: Mapping[str, str]) -> None:
        """A 200 came: its bytes from the first, its validator; the resumes still count."""
        fresh = Transfer.of(headers)
        self.validator, self.encoding, self.length = fresh.validator, fresh.encoding, fresh.length
        self.received = 0

    def may_resume(self) -> bool:
        return self.validator is not None and self.resumes < MAX_RESUMES

    def request_headers(self) -> dict[str, str]:
        """The headers that ask for the rest, only if it is still the same file."""
        assert self.validator is not None
        return {hdrs.RANGE: f"bytes={self.received}-", hdrs.IF_RANGE: self.validator}

    def answer(self, status: int, headers: Mapping[str, str]) -> Answer:
        """What the answer to ``request_headers`` allows."""
        if status == 200:
            return Answer.START_OVER
        if status != 206 or _encoding(headers) != self.encoding:
            return Answer.GIVE_UP
        match = _CONTENT_RANGE.fullmatch(headers.get(hdrs.CONTENT_RANGE, "").strip())
        if match is None or int(match[1]) != self.received:
            return Answer.GIVE_UP  # multipart/byteranges, or another part of the file
        total = None if match[3] == "*" else int(match[3])
        if self.length is not None and total is not None and total != self.length:
            return Answer.GIVE_UP
        return Answer.CONTINUE if self._same_file(headers) else Answer.GIVE_UP

    def _same_file(self, headers: Mapping[str, str]) -> bool:
        """A server that honours Range but ignores If-Range sends the part anyway: the
        part's own validator, if it has one, tells whether the file is still the same."""
        assert self.validator is not None
        named = hdrs.ETAG if self.validator.startswith('"') else hdrs.LAST_MODIFIED
        seen = headers.get(named)
        return seen is None or seen.strip() == self.validator
