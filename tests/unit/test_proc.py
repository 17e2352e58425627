"""The child-process wrapper (tools/proc.py) against stand-in processes: log events are
matched on their ``event`` field, never on message text; a process is stopped, killed
and reaped by its pid, its log kept across restarts."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from tools.proc import ChildProcess, json_events

LINES = [
    "--- chaos: start #1 of c0",
    '{"msg": "partitions assigned", "event": "assigned", "partitions": [1]}',
    '{"msg": "assigned, says the text", "event": "consuming"}',
    "Traceback (most recent call last):",
    '{"msg": "no event field, only the word assigned"}',
    '{"event": "assigned", "partitions": [0, 2]}',
    '{"event": "assigned", broken json',
]

# Logs like the service, then waits for SIGTERM and exits 0.
STAND_IN = r'''
import json, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("plain text first", flush=True)
print(json.dumps({"event": "consuming"}), flush=True)
print(json.dumps({"event": "assigned", "partitions": [3, 1]}), flush=True)
while True:
    time.sleep(0.05)
'''


def test_events_are_matched_on_the_event_field_not_the_text():
    assert [e["partitions"] for e in json_events(LINES, "assigned")] == [[1], [0, 2]]
    assert [e["event"] for e in json_events(LINES, "consuming")] == ["consuming"]
    assert [e["event"] for e in json_events(LINES)] == ["assigned", "consuming", "assigned"]


def stand_in(tmp_path: Path) -> ChildProcess:
    return ChildProcess([sys.executable, "-c", STAND_IN], {}, tmp_path / "stand-in.log")


async def test_a_child_is_followed_by_its_events_and_stopped_by_its_pid(tmp_path):
    child = stand_in(tmp_path).start()
    try:
        assert await child.wait_consuming(30)
        assert child.assignment() == {1, 3}
        assert await child.stop(30) == 0
        assert not child.alive and child.exit_codes == [0]
        mark = child.log_size()
        child.start()  # the same log, appended
        assert await child.wait_event("assigned", 30, start=mark) is not None
        assert len(child.events("consuming")) == 2
        assert len(child.events("consuming", start=mark)) == 1
        child.signal(signal.SIGSTOP)
        assert await child.stop(0.5) is None, "a stopped process cannot exit on SIGTERM"
        assert child.exit_codes == [0, -signal.SIGKILL], "it was killed instead"
    finally:
        child.kill()


async def test_waiting_for_an_event_ends_when_the_process_does(tmp_path):
    child = ChildProcess([sys.executable, "-c", "print('no events')"], {},
                         tmp_path / "quiet.log").start()
    try:
        # Ends with the process, long before its own timeout.
        assert await asyncio.wait_for(child.wait_event("consuming", 3600), 60) is None
        assert child.returncode == 0 and "no events" in child.log_text()
    finally:
        child.kill()
