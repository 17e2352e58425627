"""A download's body, decoded as it arrives: Content-Encoding, then a gzip file inside.

The decoded size is capped, and every decoded piece is counted (``count``) before it
is kept, so the memory budget sees it first. Decoding is pure and may run in a worker
thread (``pieces``); keeping runs on the event loop (``keep``).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Iterator
from typing import Protocol

import aiohttp
from aiohttp import hdrs

from app.errors import PoisonError

_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_CONTENT_WBITS = {"gzip": _GZIP_WBITS, "x-gzip": _GZIP_WBITS, "deflate": zlib.MAX_WBITS}
_PIECE = 256 * 1024  # most output per zlib call, so a bomb is caught after one piece
INFLATE_INLINE_BYTES = 1024 * 1024  # smaller bodies inflate on the event loop
INFLATE_BATCH_BYTES = 1024 * 1024   # decoded per worker-thread call


class _Inflate:
    """One compressed layer, inflated as it arrives in bounded pieces."""

    def __init__(self, wbits: int, where: object) -> None:
        self._wbits, self._where = wbits, where
        self._z = zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            if self._z.eof:
                data = self._z.unused_data + data
                if not data:
                    return
                if self._wbits != _GZIP_WBITS:
                    raise self._bad("data after end of stream")
                self._z = zlib.decompressobj(self._wbits)  # concatenated gzip members
            try:
                out = self._z.decompress(data, _PIECE)
            except zlib.error as exc:
                raise self._bad(f"corrupt stream ({exc})") from None
            data = self._z.unconsumed_tail
            if out:
                yield out
            # A full piece may leave output pending inside zlib: ask again.
            if not data and len(out) < _PIECE and not self._z.unused_data:
                return

    def finish(self) -> None:
        if not self._z.eof:  # truncated data must never pass as a whole file
            raise self._bad("stream ends early")

    def _bad(self, what: str) -> PoisonError:
        return PoisonError("bad_gzip", f"{what}: {self._where}")


class Sink(Protocol):
    """Where decoded pieces go instead of memory (app/files/sink.py: to a spool file)."""

    def append(self, piece: bytes) -> None: ...

    def finish(self) -> bytes: ...

    def restart(self) -> None: ...  # the body comes again from its first byte


class BodyDecoder:
    """Decodes a response body; ``finish`` returns it whole, capped at ``limit`` bytes
    (or, with a ``sink``, what the sink's ``finish`` returns)."""

    def __init__(self, outer: _Inflate | None, limit: int, where: object,
                 count: Callable[[bytes], None] | None = None, sink: Sink | None = None) -> None:
        self._outer, self._limit, self._where = outer, limit, where
        self._count = count
        self._sink = sink
        self._inner: _Inflate | None = None
        self._head: bytes | None = b""  # bytes kept until the gzip magic can be sniffed
        self._out: list[bytes] = []
        self.size = 0  # decoded bytes kept so far

    @property
    def compressed(self) -> bool:
        return self._outer is not None or self._inner is not None

    def pieces(self, chunk: bytes) -> Iterator[bytes]:
        """The decoded pieces of ``chunk`` (each at most 256 KiB when inflated)."""
        for piece in self._outer.feed(chunk) if self._outer else (chunk,):
            if self._head is not None:
                self._head += piece
                if len(self._head) < len(_GZIP_MAGIC):
                    continue
                piece, self._head = self._head, None
                if piece.startswith(_GZIP_MAGIC):
                    self._inner = _Inflate(_GZIP_WBITS, self._where)
            yield from self._inner.feed(piece) if self._inner else (piece,)

    def keep(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.size > self._limit:
            raise PoisonError("file_too_large",
                              f"decoded body exceeds {self._limit} bytes: {self._where}")
        if self._count is not None:
            self._count(piece)
        if self._sink is not None:
            self._sink.append(piece)
            return
        self._out.append(piece)

    def finish(self) -> bytes:
        if self._outer:
            self._outer.finish()
        if self._head:  # a body shorter than the gzip magic
            self.keep(self._head)
        if self._inner:
            self._inner.finish()
        if self._sink is not None:
            return self._sink.finish()
        out, self._out = self._out, []
        return out[0] if len(out) == 1 else b"".join(out)


def take(pieces: Iterator[bytes], most: int) -> list[bytes]:
    """Up to about ``most`` bytes of ``pieces`` (one piece more at most)."""
    taken, size = [], 0
    for piece in pieces:
        taken.append(piece)
        size += len(piece)
        if size >= most:
            break
    return taken


def content_decoder(resp: aiohttp.ClientResponse, where: object) -> _Inflate | None:
    coding = resp.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    if coding in ("", "identity"):
        return None
    if coding not in _CONTENT_WBITS:  # we asked for gzip or deflate only
        raise PoisonError("bad_gzip", f"unsupported Content-Encoding {coding!r}: {where}")
    return _Inflate(_CONTENT_WBITS[coding], where)


async def decode_chunk(body: BodyDecoder, chunk: bytes) -> None:
    """Inflate ``chunk`` and keep its pieces; once a compressed body is big, inflate in a
    worker thread (zlib releases the GIL) a bounded amount at a time, so heartbeats,
    commits and other partitions keep moving and every piece is counted before kept."""
    pieces = body.pieces(chunk)
    if not body.compressed or body.size < INFLATE_INLINE_BYTES:
        for piece in pieces:
            body.keep(piece)
        return
    while batch := await asyncio.to_thread(take, pieces, INFLATE_BATCH_BYTES):
        for piece in batch:
            body.keep(piece)
