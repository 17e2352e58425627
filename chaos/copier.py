"""The service as the chaos suite runs it: ``python -m app`` with injected aborts.

``TEST_ABORT_RATE`` (0 up to 1) of the exactly-once committer's transactions are
aborted once their records are written (and their offsets sent, in whichever order the
protocol sends them), just before the commit, so the checker can prove that aborted
records never become visible. The service itself has no such
setting: a subclass of it wraps its committer here, through the service's one
extension point (``Service.committer``).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from app import __main__ as service
from app.config import Settings
from app.errors import TransientError
from app.files.records import Output
from app.kafka.committer import Committer, Offsets, Result
from app.service import Service


class AbortInjecting:
    """Wraps a committer: a drawn share of commits fail just before commit_transaction,
    their records written."""

    def __init__(self, inner: Committer, rate: float, draw=random.random) -> None:
        self.inner, self.rate, self._draw = inner, rate, draw

    async def commit(self, producer: AIOKafkaProducer, offsets: Offsets,
                     records: Sequence[Output]) -> Result:
        if self.rate > 0 and self._draw() < self.rate:
            producer = _FailsAfterRecords(producer)  # type: ignore[assignment]
        return await self.inner.commit(producer, offsets, records)


class _FailsAfterRecords:
    """The real producer, except that each batch, once written, reports a failure."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future:
        written = await self._producer.send_batch(batch, topic, partition=partition)
        failed = asyncio.get_running_loop().create_future()

        def fail(_: asyncio.Future) -> None:
            failed.set_exception(TransientError(
                "injected_abort", "TEST_ABORT_RATE aborted this transaction"))
        written.add_done_callback(fail)
        return failed


def abort_rate(environ: dict[str, str] | os._Environ[str]) -> float:
    rate = float(environ.get("TEST_ABORT_RATE", "0"))
    if not 0 <= rate < 1:
        raise SystemExit(f"chaos.copier: TEST_ABORT_RATE={rate} must be from 0 up to 1")
    return rate


class AbortInjectingService(Service):
    def __init__(self, settings: Settings, rate: float) -> None:
        super().__init__(settings)
        self.rate = rate

    def committer(self, consumer: AIOKafkaConsumer) -> Committer:
        return AbortInjecting(super().committer(consumer), self.rate)


def main() -> int:
    rate = abort_rate(os.environ)
    settings = service.load(sys.argv[1:])
    return 2 if settings is None else service.run(AbortInjectingService(settings, rate))


if __name__ == "__main__":
    sys.exit(main())
