"""The preparer's retry loop on fakes: transient failures are retried with backoff up to
MAX_ATTEMPTS, then dead-lettered; a poison failure is dead-lettered at once."""

from __future__ import annotations

from app.errors import PoisonError, TransientError
from app.files.budget import MemoryBudget
from app.files.prepare import Preparer
from app.ops.stats import Stats
from tests.unit.fakes import FileDownloader, Sleeps, record, settings

URL = "http://files/a"


def preparer(downloader: FileDownloader, sleeps: Sleeps, *flags: str) -> Preparer:
    return Preparer(settings("--max-attempts", "3", *flags), downloader,  # type: ignore[arg-type]
                    MemoryBudget(1 << 20), Stats(), sleep=sleeps)


async def test_transient_failures_are_retried_then_succeed():
    downloader, sleeps = FileDownloader({URL: b'{"a":1}'}), Sleeps()
    downloader.failures[URL] = [TransientError("http_transient", "503")] * 2
    prepared = await preparer(downloader, sleeps).prepare(record(0, URL))
    assert not prepared.dead_lettered and prepared.attempts == 3
    assert len(downloader.requests) == 3 and len(sleeps.delays) == 2
    assert sleeps.delays[1] > sleeps.delays[0] * 0.5  # backoff grows (with jitter)


async def test_a_record_failing_every_attempt_is_dead_lettered_with_its_reason():
    downloader, sleeps = FileDownloader({URL: b'{"a":1}'}), Sleeps()
    downloader.failures[URL] = [TransientError("http_transient", "503")] * 5
    prepared = await preparer(downloader, sleeps).prepare(record(0, URL))
    assert prepared.dead_lettered and prepared.attempts == 3
    assert b'"reason":"http_transient"' in prepared.records[0].value
    assert len(downloader.requests) == 3 and len(sleeps.delays) == 2


async def test_a_poison_failure_is_dead_lettered_without_a_retry():
    downloader, sleeps = FileDownloader({URL: b'{"a":1}'}), Sleeps()
    downloader.failures[URL] = [PoisonError("http_error", "404")]
    prepared = await preparer(downloader, sleeps).prepare(record(0, URL))
    assert prepared.dead_lettered and prepared.attempts == 1 and sleeps.delays == []


async def test_an_unexpected_error_is_retried_not_raised():
    downloader, sleeps = FileDownloader({URL: b'{"a":1}'}), Sleeps()
    downloader.failures[URL] = [RuntimeError("bug")]
    prepared = await preparer(downloader, sleeps).prepare(record(0, URL))
    assert not prepared.dead_lettered and prepared.attempts == 2
