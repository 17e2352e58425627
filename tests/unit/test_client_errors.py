"""A burst of Kafka client errors becomes a few clear lines, not a flood."""

from __future__ import annotations

import logging

from app.log import ClientErrors


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
    assert errors.filter(record("app.partition", "transaction aborted"))
    assert errors.filter(record("aiokafka.consumer", "joined group", logging.INFO))
    assert errors.total == 0
