"""Where a download's decoded pieces are kept: in memory while the body is small, then
in a spool file once it passes SPOOL_THRESHOLD_BYTES, or once the memory it would be
counted at passes HELD_COST_FACTOR times that (app/files/spool.py).

Memory pieces are counted against the record's reservation (the meter) before they are
kept; spooled pieces take spool room instead. Only a partition's head may spool: a
record that passes the threshold before it is the head stops (``SpoolLater``) and
downloads again, straight to the spool, once it is.
"""

from __future__ import annotations

from collections.abc import Callable

from app.errors import PoisonError
from app.files.meter import Meter
from app.files.spool import Spool, SpoolFile

_BLANK = b" \t\r\n\xef\xbb\xbf"  # JSON whitespace and a UTF-8 BOM's bytes
# A body is spooled too once holding it would be counted at this many times the threshold
# (app/files/meter.py: 2 a byte and 600 an object; about 6 at 150 bytes a transaction):
# a file of tiny transactions makes more objects than bytes.
HELD_COST_FACTOR = 6


class SpoolLater(Exception):
    """Passed the threshold while not its partition's head: download again as the head."""


class BodySink:
    def __init__(self, meter: Meter, spool: Spool, threshold: int, name: str,
                 is_head: Callable[[], bool], digest: bool, spool_now: bool) -> None:
        self.meter, self.spool, self.threshold = meter, spool, threshold
        self._name, self._is_head, self._digest = name, is_head, digest
        self.pieces: list[bytes] = []
        self.size = 0  # decoded bytes kept
        self.file: SpoolFile | None = None
        if spool_now:
            self.file = spool.create(name, digest)

    def count(self, piece: bytes) -> None:
        """The download's ``count``: sees each piece before ``append`` keeps it."""
        if self.file is None and (self.size + len(piece) > self.threshold
                                  or self.meter.cost > HELD_COST_FACTOR * self.threshold):
            self._switch()
        if self.file is None:
            self.meter.count(piece)

    def append(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.file is not None:
            self.file.write(piece)
        else:
            self.pieces.append(piece)

    def finish(self) -> bytes:
        """The body if it stayed in memory; empty once spooled (it is in ``file``)."""
        if self.file is not None:
            self.file.close()
            return b""
        pieces, self.pieces = self.pieces, []
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def discard(self) -> None:
        """The download failed or stopped: remove its spool file, drop its pieces."""
        if self.file is not None:
            self.file.remove()
        self.pieces = []

    def restart(self) -> None:
        """The server sends the whole body again: what was kept goes, the spool file too
        (a new one takes its place, if the body was spooled)."""
        spooled = self.file is not None
        self.discard()
        self.file, self.size = None, 0
        if spooled:
            self.file = self.spool.create(self._name, self._digest)

    def _switch(self) -> None:
        if not self._is_head():
            raise SpoolLater()
        if not self.meter.csv and starts_array(self.pieces):
            raise array_too_large(self.threshold)
        self.file = self.spool.create(self._name, self._digest)
        pieces, self.pieces = self.pieces, []
        for piece in pieces:  # through write: counted against the spool's room
            self.file.write(piece)


def starts_array(pieces: list[bytes]) -> bool:
    """The body's first byte that is not whitespace (nor a BOM) is ``[``."""
    for piece in pieces:
        text = piece.lstrip(_BLANK)
        if text:
            return text.startswith(b"[")
    return False


def array_too_large(threshold: int) -> PoisonError:
    return PoisonError("array_too_large", f"a JSON array larger than SPOOL_THRESHOLD_BYTES="
                       f"{threshold}: a file this big must be NDJSON (one object a line) or "
                       "CSV, which are streamed")
