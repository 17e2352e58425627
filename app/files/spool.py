"""Files bigger than memory: their decoded bodies on local disk, within a byte budget.

``Spool`` owns this process's directory (``SPOOL_DIR/<POD_NAME>``: a killed process's
leftovers are removed at its next start, and no other process's files are touched) and
the disk budget ``SPOOL_MAX_BYTES``. A ``SpoolFile`` is one body being written or read
back; its room is held until it is removed (after its record's commit or dead letter).

Room is taken as bytes are written: a write that does not fit raises ``SpoolFull``, the
download stops, its file is removed, and it waits (``wait_for_room``) for twice what it
had before starting again: back-pressure, never a failure. Only a partition's head
spools (app/files/prepare.py), and a head's commit needs no room, so a wait always ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import uuid
from pathlib import Path

from app.errors import PoisonError

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class SpoolFull(Exception):
    """The spool has no room for this file now: stop, wait for ``need`` bytes, retry."""

    def __init__(self, need: int) -> None:
        super().__init__(f"{need} bytes of spool needed")
        self.need = need


class Spool:
    def __init__(self, root: str, pod_name: str, max_bytes: int) -> None:
        self.dir = Path(root) / (_UNSAFE.sub("_", pod_name) or "pod")
        self.max_bytes = max_bytes
        self.used = 0
        self._changed = asyncio.Event()

    def clean(self) -> int:
        """Remove what a killed process left, and make the directory; how many files."""
        left = sum(1 for p in self.dir.iterdir() if p.is_file()) if self.dir.is_dir() else 0
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        return left

    def create(self, name: str, digest: bool = False) -> SpoolFile:
        self.dir.mkdir(parents=True, exist_ok=True)
        return SpoolFile(self, self.dir / f"{_UNSAFE.sub('_', name)}-{uuid.uuid4().hex}.spool",
                         digest)

    async def wait_for_room(self, nbytes: int) -> None:
        """Until ``nbytes`` fit (at most the whole budget)."""
        nbytes = min(nbytes, self.max_bytes)
        while self.used + nbytes > self.max_bytes:
            await self._changed.wait()

    def _take(self, nbytes: int, size: int) -> None:
        if size > self.max_bytes:
            raise PoisonError("too_large_for_spool", f"decoded body exceeds SPOOL_MAX_BYTES="
                              f"{self.max_bytes}, the spool's whole budget")
        if self.used + nbytes > self.max_bytes:
            raise SpoolFull(min(2 * size, self.max_bytes))
        self.used += nbytes

    def _give_back(self, nbytes: int) -> None:
        self.used -= nbytes
        self._changed.set()
        self._changed = asyncio.Event()


class SpoolFile:
    """One decoded body on disk: written once, then read back any number of times."""

    def __init__(self, spool: Spool, path: Path, digest: bool) -> None:
        self.spool, self.path = spool, path
        self.size = 0
        self._hash = hashlib.sha256() if digest else None
        self._out = open(path, "wb")  # noqa: SIM115 - closed by close() or remove()
        self.removed = False

    def write(self, piece: bytes) -> None:
        """Append ``piece`` once its room is taken (SpoolFull or PoisonError if not)."""
        self.spool._take(len(piece), self.size + len(piece))
        self.size += len(piece)
        self._out.write(piece)
        if self._hash is not None:
            self._hash.update(piece)

    def close(self) -> None:
        """Done writing."""
        self._out.close()

    def digest(self) -> bytes:
        """SHA-256 of the body (made with ``digest=True``)."""
        assert self._hash is not None
        return self._hash.digest()

    def remove(self) -> None:
        """Delete the file and give its room back; once, however often called."""
        if self.removed:
            return
        self.removed = True
        self._out.close()
        try:
            os.unlink(self.path)
        except OSError as exc:
            log.warning("could not remove spool file %s: %r", self.path.name, exc)
        self.spool._give_back(self.size)


def spool_setting_problem(spool_dir: str, threshold: int, max_bytes: int) -> str | None:
    """What is wrong with the spool's settings (``NAME=value: why``), checked at start."""
    if max_bytes < threshold:
        return (f"SPOOL_MAX_BYTES={max_bytes}: must be at least SPOOL_THRESHOLD_BYTES "
                f"({threshold}), or every spooled file would be dead-lettered")
    if not _can_write_under(spool_dir):
        return (f"SPOOL_DIR={spool_dir!r}: must be a directory this process can write, or be "
                "made in one (a volume in a container)")
    return None


def _can_write_under(path: str) -> bool:
    """``path`` is a writable directory, or its nearest existing ancestor is (checked
    without making anything: the service makes it at start)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)
