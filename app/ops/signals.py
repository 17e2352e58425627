"""Signals that arrive before the event loop runs: remembered, never fatal.

``python -m app`` installs these first, before importing anything heavy, so a pod
stopped while it is still importing or starting gets the same clean stop as one
stopped later: the service replays what arrived once its loop's handlers are in
place. A second signal exits at once, as it does later. Standard library only.
``StopOnSignals`` is the handler once the loop runs.
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # this module is imported first of all: nothing heavy at import time
    import asyncio

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[signal.Signals] = []


def catch_early() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, _remember)


def _remember(signum: int, frame: FrameType | None) -> None:
    _received.append(signal.Signals(signum))
    if len(_received) > 1:
        os._exit(1)


def received_early() -> list[signal.Signals]:
    """The signals caught before the loop's handlers took over (then forgotten)."""
    caught = list(_received)
    _received.clear()
    return caught


class StopOnSignals:
    """SIGTERM or SIGINT, once the loop runs: the first only sets ``stopping`` (what is in
    flight finishes), a second exits at once. Signals caught early are replayed."""

    def __init__(self, stopping: asyncio.Event) -> None:
        self.stopping, self.count = stopping, 0

    def install(self) -> None:
        import asyncio
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.received, sig)
        for sig in received_early():
            self.received(sig)

    def received(self, sig: signal.Signals) -> None:
        import logging
        log = logging.getLogger(__name__)
        self.count += 1
        if self.count > 1:
            log.warning("second %s: exiting now", sig.name)
            os._exit(1)
        log.info("%s received: finishing in-flight transactions", sig.name)
        self.stopping.set()
