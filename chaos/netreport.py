"""What each fault kind caused: the copiers' logged events, counted per fault kind.
Pure: lines and a timeline in, counts out (no I/O, no clock).

The service logs the lines other code relies on with an ``event`` field
(``aborted``, ``fenced``, ``task_failed``, ``task_started``, ``assigned``,
``revoked``, ``waiting_for_kafka``, ``stopped``, ...). An event belongs to the
fault whose window it falls in: from the fault's first timeline note to the next
fault's start (the last fault's window runs to the end of the run), so a recovery that
follows a fault is counted for it. Two events get a finer name:

- ``aborted`` caused by the testing aid (``TEST_ABORT_RATE``): ``aborted_injected``;
- ``task_failed`` after a commit whose outcome is unknown (the producer is
  replaced): ``replaced_unknown_commit``.

Also counted: ``error_lines`` (level error, the service's or aiokafka's) and
``unparsed_lines`` (not JSON: e.g. a traceback).
"""

from __future__ import annotations

import bisect
import collections
import datetime
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import orjson

BEFORE = "before_faults"


class Event(NamedTuple):
    at: float   # seconds since the epoch
    name: str


def parse_ts(text: str) -> float:
    """The service's ``ts`` field ("2026-11-29T13:35:07.123Z") in seconds since the epoch."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def events(lines: Iterable[str]) -> tuple[list[Event], int]:
    """The counted events of a copier's log, and how many lines were not JSON."""
    found: list[Event] = []
    unparsed = 0
    for line in lines:
        if not line.startswith("{"):
            unparsed += bool(line.strip()) and not line.startswith("--- chaos:")
            continue
        try:
            doc = orjson.loads(line)
            at = parse_ts(doc["ts"])
        except (ValueError, KeyError, TypeError):
            unparsed += 1
            continue
        if doc.get("level") == "error":
            found.append(Event(at, "error_lines"))
        name = doc.get("event")
        if not isinstance(name, str):
            continue
        message = str(doc.get("msg", ""))
        if name == "aborted" and "injected_abort" in message:
            name = "aborted_injected"
        elif name == "task_failed" and "commit outcome unknown" in message:
            name = "replaced_unknown_commit"
        found.append(Event(at, name))
    return found, unparsed


def windows(starts: Sequence[tuple[float, str]], wall_started: float
            ) -> list[tuple[float, str]]:
    """(start, kind) of each fault in seconds since the epoch, from the scheduler's
    fault starts (seconds since the run started)."""
    return [(wall_started + at, kind) for at, kind in sorted(starts)]


def attribute(faults: Sequence[tuple[float, str]], found: Iterable[Event]
              ) -> dict[str, collections.Counter[str]]:
    """Per fault kind: how many faults, and the events in their windows."""
    starts = [at for at, _ in faults]
    per_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for _, kind in faults:
        per_kind[kind]["faults"] += 1
    for event in found:
        i = bisect.bisect_right(starts, event.at) - 1  # the last fault started by then
        per_kind[faults[i][1] if i >= 0 else BEFORE][event.name] += 1
    return dict(per_kind)


def report(starts: Sequence[tuple[float, str]], wall_started: float,
           logs: Iterable[Iterable[str]]) -> dict[str, dict[str, int]]:
    """Events per fault kind over every copier's log, plus the totals."""
    found: list[Event] = []
    unparsed = 0
    for lines in logs:
        got, bad = events(lines)
        found.extend(got)
        unparsed += bad
    per_kind = attribute(windows(starts, wall_started), found)
    totals: collections.Counter[str] = collections.Counter(e.name for e in found)
    totals["unparsed_lines"] = unparsed
    out = {kind: dict(sorted(counts.items())) for kind, counts in sorted(per_kind.items())}
    out["total"] = dict(sorted(totals.items()))
    return out
