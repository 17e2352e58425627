"""Counting what each fault kind caused (chaos/netreport.py), on synthetic log lines."""

from __future__ import annotations

import datetime

import orjson

from chaos import netreport

T0 = datetime.datetime(2026, 11, 29, 13, 0, 0, tzinfo=datetime.UTC).timestamp()


def line(at: float, event: str | None = None, msg: str = "", level: str = "info") -> str:
    ts = datetime.datetime.fromtimestamp(T0 + at, datetime.UTC)
    doc = {"ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
           "level": level, "msg": msg}
    if event:
        doc["event"] = event
    return orjson.dumps(doc).decode()


# The scheduler's fault starts, seconds since the run started.
STARTS = [(10.0, "kill"), (20.0, "net_cutoff"), (50.0, "net_lost_responses"),
          (100.0, "net_cutoff")]


def test_back_to_back_faults_of_one_kind_are_each_a_fault_with_its_own_window():
    starts = [(10.0, "net_bandwidth"), (30.0, "net_bandwidth"), (20.0, "kill")]
    assert netreport.windows(starts, T0) == [
        (T0 + 10, "net_bandwidth"), (T0 + 20, "kill"), (T0 + 30, "net_bandwidth")]
    got = netreport.report(starts, T0, [[line(25, "aborted"), line(31, "fenced")]])
    assert got["net_bandwidth"] == {"faults": 2, "fenced": 1}
    assert got["kill"] == {"faults": 1, "aborted": 1}


def test_events_are_counted_for_the_fault_whose_window_they_fall_in():
    logs = [
        [line(5, "assigned"), line(12, "task_started"), "--- chaos: start #2 of c0",
         line(36, "fenced", "partition fenced by another producer"),
         line(41, "aborted", "transaction aborted, will retry: TransientError('x')")],
        [line(55, "aborted", "transaction aborted, will retry: "
                             "TransientError('injected_abort', 'TEST_ABORT_RATE')"),
         line(96, "task_failed", "partition task failed; starting a new producer: "
                                 "commit outcome unknown: KafkaTimeoutError()"),
         line(97, "task_failed", "partition task failed; starting a new producer: x"),
         line(98, None, "Unable connect to node with id 1", level="error"),
         "Traceback (most recent call last):",
         line(130, "fenced")],
    ]
    got = netreport.report(STARTS, T0, logs)
    assert got["before_faults"] == {"assigned": 1}
    assert got["kill"] == {"faults": 1, "task_started": 1}
    assert got["net_cutoff"] == {"faults": 2, "fenced": 2, "aborted": 1}
    assert got["net_lost_responses"] == {
        "faults": 1, "aborted_injected": 1, "replaced_unknown_commit": 1, "task_failed": 1,
        "error_lines": 1}
    assert got["total"]["unparsed_lines"] == 1
    assert got["total"]["fenced"] == 2 and "faults" not in got["total"]


def test_an_event_exactly_at_a_fault_start_belongs_to_that_fault():
    got = netreport.attribute([(T0 + 10, "kill"), (T0 + 20, "net_reset")],
                              [netreport.Event(T0 + 20, "aborted")])
    assert got["net_reset"]["aborted"] == 1 and got["kill"]["aborted"] == 0
