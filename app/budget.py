"""The byte budget: bytes held by prepared-but-uncommitted records, across all partitions."""

from __future__ import annotations

import asyncio


class ByteBudget:
    """Caps bytes held by prepared-but-uncommitted records across all partitions.

    A new download waits while the cap is exceeded; one already running finishes,
    so memory stays within the cap plus the downloads in flight.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._room = asyncio.Event()
        self._room.set()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    def take(self, nbytes: int) -> Claim:
        self.used += nbytes
        if self.used >= self.limit:
            self._room.clear()
        return Claim(self, nbytes)

    def _give_back(self, nbytes: int) -> None:
        self.used -= nbytes
        if self.used < self.limit:
            self._room.set()


class Claim:
    """Bytes taken from a budget; ``release`` gives them back once, however often called."""

    __slots__ = ("_budget", "nbytes")

    def __init__(self, budget: ByteBudget | None, nbytes: int) -> None:
        self._budget = budget
        self.nbytes = nbytes

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget._give_back(self.nbytes)


NOTHING = Claim(None, 0)
