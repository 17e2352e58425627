"""The re-drive progress bar: one line on a terminal, redrawn in place; nothing otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

WIDTH = 24
REDRAW_S = 0.1


def render(read: int, total: int, moved: int, selected: int, elapsed: float) -> str:
    """``[#####-------] 40% 400/1000 read | moved 120/130 selected | 85/s``."""
    share = read / total if total else 1.0
    filled = int(share * WIDTH)
    rate = moved / elapsed if elapsed > 0 else 0.0
    return (f"[{'#' * filled}{'-' * (WIDTH - filled)}] {share:4.0%} {read}/{total} read | "
            f"moved {moved}/{selected} selected | {rate:.0f}/s")


class Progress:
    def __init__(self, stream: TextIO, total: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.total = total
        self._clock = clock
        self._started = clock()
        self._drawn_at = float("-inf")
        self._last = (0, 0, 0)

    @classmethod
    @contextmanager
    def to(cls, stream: TextIO, total: int, enabled: bool) -> Iterator[Progress | None]:
        """A bar on ``stream`` if enabled (a terminal), ended with a newline."""
        if not enabled:
            yield None
            return
        bar = cls(stream, total)
        try:
            yield bar
        finally:
            bar.finish()

    def update(self, read: int, moved: int, selected: int) -> None:
        self._last = (read, moved, selected)
        now = self._clock()
        if now - self._drawn_at >= REDRAW_S:
            self._drawn_at = now
            self._draw(now)

    def finish(self) -> None:
        self._draw(self._clock())
        self.stream.write("\n")
        self.stream.flush()

    def _draw(self, now: float) -> None:
        read, moved, selected = self._last
        line = render(read, self.total, moved, selected, now - self._started)
        self.stream.write("\r" + line + "\x1b[K")  # erase what a longer line left
        self.stream.flush()
