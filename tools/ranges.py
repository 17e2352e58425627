"""A file served with byte ranges (RFC 9110, section 14) and cut off half-way, for the
tests of resumable downloads: ``FileServer.serve(path, RangedFile(...))``.

The first ``cut_first`` answers stop half-way through what they send, as ``cut`` says:
``close`` (the body ends short of its Content-Length), ``reset`` (a TCP RST) or
``stall`` (silence, past the client's read timeout, until the client hangs up).
A Range request then gets what ``ranges`` says. ``versions[i]`` is the file from
request i + 1 on (the last one stays): each version has its own ETag and Last-Modified.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from dataclasses import dataclass, field
from email.utils import formatdate

from aiohttp import web

WAIT_S = 20.0  # the longest a stalled answer waits for the client to hang up
POLL_S = 0.02
CUTS = ("close", "reset", "stall")
# honoured: 206 while If-Range names the file; ignored: Accept-Ranges said, a 200 always;
# none: neither; no-if-range: 206 whatever If-Range says (a careless cache).
RANGES = ("honoured", "ignored", "none", "no-if-range")
VALIDATORS = ("etag", "last-modified", "none")
_RANGE = re.compile(r"bytes=(\d+)-$")  # the one form a resuming client sends
_EPOCH = 1_700_000_000  # Last-Modified of version 0: long before any response's Date


@dataclass
class RangedFile:
    versions: list[bytes]
    headers: dict[str, str] = field(default_factory=dict)  # e.g. Content-Encoding
    ranges: str = "honoured"
    validator: str = "etag"
    cut_first: int = 1
    cut: str = "close"
    seen: list[tuple[str | None, str | None]] = field(default_factory=list)  # Range, If-Range

    def __post_init__(self) -> None:
        assert self.ranges in RANGES and self.validator in VALIDATORS and self.cut in CUTS

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.headers.get("Range"), request.headers.get("If-Range")))
        version = min(len(self.seen), len(self.versions)) - 1
        body, headers = self.versions[version], self.headers_of(version)
        status, part = self._part(request, body, headers)
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(part)
        await response.prepare(request)
        if len(self.seen) > self.cut_first:
            await response.write(part)
            return response
        await response.write(part[: len(part) // 2])
        if self.cut == "stall":
            await _until_hung_up(request)
        _hang_up(request, reset=self.cut == "reset")
        return response

    def headers_of(self, version: int) -> dict[str, str]:
        """The headers every answer with ``versions[version]`` has."""
        headers = dict(self.headers)
        if self.ranges in ("honoured", "ignored", "no-if-range"):
            headers["Accept-Ranges"] = "bytes"
        if self.validator == "etag":
            headers["ETag"] = f'"v{version}-{len(self.versions[version])}"'
        elif self.validator == "last-modified":
            headers["Last-Modified"] = formatdate(_EPOCH + 86400 * version, usegmt=True)
        return headers

    def _part(self, request: web.Request, body: bytes,
              headers: dict[str, str]) -> tuple[int, bytes]:
        """The status and bytes to answer with (``headers`` gains Content-Range)."""
        match = _RANGE.match(request.headers.get("Range", ""))
        if match is None or self.ranges in ("ignored", "none"):
            return 200, body
        named = request.headers.get("If-Range")
        current = headers.get("ETag") or headers.get("Last-Modified")
        if named is not None and named != current and self.ranges == "honoured":
            return 200, body
        start = int(match[1])
        if start >= len(body):
            headers["Content-Range"] = f"bytes */{len(body)}"
            return 416, b""
        headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        return 206, body[start:]


async def _until_hung_up(request: web.Request) -> None:
    """Until the client closed the connection (its transport is gone), or WAIT_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    # aiohttp wakes no handler when its client hangs up, it only drops the transport.
    while request.transport is not None and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(POLL_S)


def _hang_up(request: web.Request, reset: bool) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if reset and sock is not None:  # RST instead of FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()
