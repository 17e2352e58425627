"""A burst of Kafka client errors becomes a few clear lines, not a flood; a dead
producer's leftovers are not errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiokafka import errors as kafka
from aiokafka.producer.sender import Sender

from app.ops.log import ClientErrors, loop_exceptions


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_a_burst_shows_one_line_a_minute_summary_and_a_recovery(caplog):
    clock = Clock()
    errors = ClientErrors(quiet_s=10, summary_every_s=60, clock=clock)
    shown = []
    with caplog.at_level(logging.WARNING, logger="app.kafka"):
        for tick in range(1500):  # 40 lines a second for 37.5 s, then 37.5 s more
            clock.now = tick * 0.05
            shown.append(errors.filter(record("aiokafka.conn", "Unable connect to node 1")))
        errors.tick()  # still failing: no recovery line
        clock.now += 11
        errors.tick()
    assert not any(shown), "no raw aiokafka line passes during a burst"
    events = [r.event for r in caplog.records]  # type: ignore[attr-defined]
    assert events == ["kafka_errors", "kafka_errors", "kafka_recovered"]
    assert "Unable connect to node 1" in caplog.records[0].getMessage()
    assert errors.total == 1500 and errors.since is None


def test_other_loggers_and_info_lines_pass_untouched():
    errors = ClientErrors()
    assert errors.filter(record("app.task.partition", "transaction aborted"))
    assert errors.filter(record("aiokafka.consumer", "joined group", logging.INFO))
    assert errors.total == 0


class RecordingLoop:
    """Stands in for the event loop: records what reaches asyncio's default handler."""

    def __init__(self) -> None:
        self.defaulted: list[dict] = []

    def default_exception_handler(self, context: dict) -> None:
        self.defaulted.append(context)


def failed_task(coro: Coroutine[Any, Any, None]) -> asyncio.Task:
    async def run() -> asyncio.Task:
        task = asyncio.create_task(coro)
        await asyncio.wait([task])
        return task
    return asyncio.run(run())


def unawaited_future(error: Exception) -> Callable[[], dict]:
    return lambda: {"message": "Future exception was never retrieved", "exception": error}


def unawaited_produce_task() -> dict:
    # aiokafka's own produce-request coroutine, failing (here: on a sender it can't use).
    task = failed_task(Sender._send_produce_req(object(), 0, {}))
    return {"message": "Task exception was never retrieved", "exception": task.exception(),
            "future": task}


@pytest.mark.parametrize("leftover", [
    unawaited_future(kafka.ProducerFenced()),
    unawaited_future(kafka.KafkaError("Unexpected error during batch delivery")),
    unawaited_produce_task,
], ids=["fenced future", "fatal future", "produce task"])
def test_a_dead_producers_leftover_is_a_debug_line_not_an_error(caplog, leftover):
    loop = RecordingLoop()
    with caplog.at_level(logging.DEBUG, logger="aiokafka"):
        loop_exceptions(loop, leftover())  # type: ignore[arg-type]
    assert loop.defaulted == []
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


async def _ours() -> None:
    raise kafka.ProducerFenced()


def test_every_other_loop_error_goes_to_asyncios_handler():
    loop = RecordingLoop()
    ours = failed_task(_ours())
    others = [
        {"message": "Future exception was never retrieved", "exception": ValueError("ours")},
        {"message": "Task exception was never retrieved", "exception": ours.exception(),
         "future": ours},
        {"message": "Exception in callback", "exception": ValueError("bug")},
        {"message": "Future exception was never retrieved"},
    ]
    for context in others:
        loop_exceptions(loop, context)  # type: ignore[arg-type]
    assert loop.defaulted == others
