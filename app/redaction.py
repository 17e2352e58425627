"""Secrets kept out of logs and error messages: URLs without their userinfo or query,
and a password masked wherever a message quotes it.

Signed URLs carry their credentials in the query, and aiohttp's exception texts hold
the full URL, so a message names a URL only in its redacted form.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from yarl import URL


def redact_url(url: str) -> str:
    """The URL without userinfo, query or fragment: safe for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


class Redacted:
    """``redact_url(url)``, made only when a message is formatted: downloads that succeed
    never pay for it."""

    __slots__ = ("_url",)

    def __init__(self, url: URL | str) -> None:
        self._url = url

    def __str__(self) -> str:
        return redact_url(str(self._url))


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` masked."""
    return text.replace(secret, "***") if secret else text
