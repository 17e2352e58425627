"""Input records to file URLs. Pure: no I/O, logging or env.

An input record's value is the URL as plain text, a JSON string, or a JSON object with
a string ``url``; anything else is a PoisonError (``invalid_input_record``), and a URL
longer than MAX_URL_BYTES is one too (``url_too_long``): it is never downloaded.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import orjson

from app.config import DEFAULT_MAX_URL_BYTES
from app.errors import PoisonError
from app.files.exact_json import kind_of

_BAD_URL_CHAR = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_JSON_START = frozenset('"{[-0123456789tfn')


def _bad_input(message: str) -> PoisonError:
    return PoisonError("invalid_input_record", message)


def parse_input_url(value: bytes | None, max_bytes: int = DEFAULT_MAX_URL_BYTES) -> str:
    """The file URL carried by an input record (plain text, JSON string or {"url": ...}),
    at most ``max_bytes`` long in UTF-8."""
    if not value:
        raise _bad_input("record value is empty")
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise _bad_input(f"record value is not valid UTF-8 (byte {e.start})") from None
    if not text:
        raise _bad_input("record value is blank")
    doc: object = text
    # Only these can start a JSON document; a plain URL never does, so it skips the
    # parser (and the exception, which costs more than the parse).
    if text[0] in _JSON_START:
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            if text[0] in '"{[':  # meant as JSON, so don't reinterpret it as a URL
                raise _bad_input(f"record value is malformed JSON: {e}") from None
    if isinstance(doc, dict):
        doc = doc.get("url")
        if not isinstance(doc, str):
            raise _bad_input("JSON object has no string 'url' field")
    elif not isinstance(doc, str):
        raise _bad_input(f"record value is a JSON {kind_of(doc)}, expected a URL")
    _check_url(doc)
    size = len(doc.encode())
    if size > max_bytes:
        raise PoisonError("url_too_long", f"the URL is {size} bytes; MAX_URL_BYTES is "
                          f"{max_bytes}")
    return doc


def _check_url(url: str) -> None:
    bad = _BAD_URL_CHAR.search(url)
    if bad:
        raise _bad_input(f"URL has whitespace or a control character at position {bad.start()}")
    try:
        parts = urlsplit(url)
        _ = parts.port  # only evaluated for the ValueError a malformed port raises
    except ValueError as e:
        raise _bad_input(f"URL is malformed: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise _bad_input(f"URL scheme {parts.scheme!r} is not http or https")
    if not parts.hostname:
        raise _bad_input("URL has no host")
