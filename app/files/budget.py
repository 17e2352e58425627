"""The memory budget: every byte a record's work holds, counted before it is held.

Each input record in a prefetch window has one ``Reservation``. Its download is
admitted only when an estimate of its size fits (waiting outside any download slot);
as decompressed bytes arrive they are counted (with what parsing them will take)
before they are kept; once the record's outputs exist the reservation is set to
exactly what they hold; it is released when the record is committed or dropped.

No deadlock: a reservation that does not fit makes its download give up its slot
and wait for room (a download is never paused holding a connection). Room comes
from commits, and a partition's oldest record (the window's head) can always
commit once prepared; so one head at a time (the holder) may go past the limit.
Memory therefore stays under ``limit`` plus one file's worth (see docs/operations.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class NoRoom(Exception):
    """A download outgrew what the budget could give it: retry when there is room."""


class MemoryBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0  # the most ever counted at once
        self.holder: Reservation | None = None  # the one head allowed past the limit
        self._changed = asyncio.Event()

    def reservation(self) -> Reservation:
        return Reservation(self)

    def _fits(self, r: Reservation, nbytes: int) -> bool:
        if self.used + nbytes <= self.limit or self.holder is r:
            return True
        if r.head and self.holder is None:
            self.holder = r
            return True
        return False

    def _set(self, r: Reservation, nbytes: int) -> None:
        self.used += nbytes - r.held
        self.peak = max(self.peak, self.used)
        shrunk, r.held = nbytes < r.held, nbytes
        if shrunk:
            self._notify()

    def _release(self, r: Reservation) -> None:
        self._set(r, 0)
        if self.holder is r:
            self.holder = None
            self._notify()

    def _notify(self) -> None:
        """Wake every waiter; each checks again whether it fits now."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _changes(self) -> None:
        await self._changed.wait()


class Reservation:
    """One input record's share of the budget."""

    __slots__ = ("_budget", "held", "head", "released", "on_release")

    def __init__(self, budget: MemoryBudget | None) -> None:
        self._budget = budget
        self.held = 0
        self.head = False      # its partition's oldest uncommitted record
        self.released = False
        self.on_release: Callable[[], None] | None = None  # e.g. remove its spool file

    async def admit(self, nbytes: int) -> None:
        """Wait until ``nbytes`` more fit, then hold them (a download's admission)."""
        budget = self._budget
        if budget is None or self.released:
            return
        while not budget._fits(self, nbytes):
            await budget._changes()
        if budget.holder is self:  # past the limit only by what it really receives
            nbytes = max(0, min(nbytes, budget.limit - budget.used))
        budget._set(self, self.held + nbytes)

    def grow_to(self, nbytes: int) -> None:
        """Hold at least ``nbytes`` now, or raise NoRoom."""
        budget = self._budget
        if budget is None or self.released or nbytes <= self.held:
            return
        if not budget._fits(self, nbytes - self.held):
            raise NoRoom(f"{nbytes} bytes do not fit")
        budget._set(self, nbytes)

    def settle(self, nbytes: int) -> None:
        """Hold exactly ``nbytes`` (what the prepared outputs take; 0 before a retry)."""
        if self._budget is not None and not self.released:
            self._budget._set(self, nbytes)

    async def until_head(self) -> None:
        """Until the record is its partition's head (at once without a budget)."""
        while self._budget is not None and not self.head and not self.released:
            await self._budget._changes()

    def promote(self) -> None:
        """The record became its partition's head: it may now pass the limit."""
        self.head = True
        if self._budget is not None:
            self._budget._notify()

    def release(self) -> None:
        """Give everything back, once, however often called."""
        if self._budget is not None and not self.released:
            self._budget._release(self)
        self.released = True
        cleanup, self.on_release = self.on_release, None
        if cleanup is not None:
            cleanup()


UNCOUNTED = Reservation(None)
