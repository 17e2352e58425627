"""Signals that arrive before the event loop runs: remembered, never fatal.

``python -m app`` installs these first, before importing anything heavy, so a pod
stopped while it is still importing or starting gets the same clean stop as one
stopped later: the service replays what arrived once its loop's handlers are in
place. A second signal exits at once, as it does later. Standard library only.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

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
