"""Steps of the service's life that must not hold it up: a start-up step that a stop
interrupts, a shutdown step that never raises nor hangs, and a background job started
now and then, one at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


async def unless_stopped(stopping: asyncio.Event, work: Awaitable[T]) -> tuple[bool, T | None]:
    """(True, its result), or (False, None) if ``stopping`` was set first (then ``work`` is
    cancelled): start-up steps never hold up a SIGTERM."""
    running = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({running, stop}, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if running.done():
        return True, running.result()
    running.cancel()
    with contextlib.suppress(BaseException):
        await running
    return False, None


class Every:
    """A background job started at most every ``period`` seconds, one at a time."""

    def __init__(self, period: float) -> None:
        self.period, self.last = period, 0.0
        self.running: asyncio.Task[None] | None = None

    def start_due(self, job: Callable[[], Coroutine[Any, Any, None]], now: float) -> None:
        if now - self.last > self.period and (self.running is None or self.running.done()):
            self.running, self.last = asyncio.create_task(job()), now

    def cancel(self) -> None:
        if self.running is not None:
            self.running.cancel()


async def quietly(what: str, work: Awaitable[object], timeout: float) -> None:
    """Await a shutdown step; a failure or a hang is logged, never raised.

    aiokafka's consumer.stop() can raise CancelledError out of its fetcher while the
    broker is unreachable; that must not cost the summary or the exit code."""
    try:
        await asyncio.wait_for(work, timeout)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled ourselves
        log.warning("%s was cancelled inside a client library", what,
                    extra={"event": "shutdown_step_failed"})
    except Exception as exc:
        log.warning("%s failed: %r", what, exc, extra={"event": "shutdown_step_failed"})
