"""A re-drive job: what it selects, how it runs, and what it saw and did. Pure: no I/O.

A re-drive *job* is its selection (reasons, times, partitions, offsets) or the name
given with ``--job``. Its consumer group and transactional id are derived from it, so
running the same command again resumes where the job got to (after a kill, too) and
never moves a dead letter twice; a different selection is a different job.
app/redrive/command.py builds a job from the command line; app/redrive/mover.py runs it.
"""

from __future__ import annotations

import enum
import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from app.config import Settings
from app.redrive.record import DeadLetter

DEFAULT_MAX_REDRIVES = 3
DEFAULT_BATCH = 200


class UsageError(Exception):
    """A bad argument: exit 2 with one line."""


class RedriveFailed(Exception):
    """The run stopped early; what it committed stays moved, the rest is resumable."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a job considers; empty/None means no limit."""

    reasons: frozenset[str] = frozenset()
    since_ms: int | None = None     # DLQ record time, inclusive
    until_ms: int | None = None     # exclusive
    partitions: frozenset[int] = frozenset()
    from_offset: int | None = None  # inclusive, on the single selected partition
    to_offset: int | None = None    # inclusive

    def selects(self, letter: DeadLetter) -> bool:
        return ((not self.reasons or letter.reason in self.reasons)
                and (self.since_ms is None or letter.timestamp_ms >= self.since_ms)
                and (self.until_ms is None or letter.timestamp_ms < self.until_ms)
                and (not self.partitions or letter.partition in self.partitions)
                and (self.from_offset is None or letter.offset >= self.from_offset)
                and (self.to_offset is None or letter.offset <= self.to_offset))

    def fingerprint(self) -> str:
        canonical = orjson.dumps({
            "reasons": sorted(self.reasons), "since": self.since_ms, "until": self.until_ms,
            "partitions": sorted(self.partitions), "from": self.from_offset,
            "to": self.to_offset})
        return "sel-" + hashlib.sha256(canonical).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Options:
    selection: Selection
    job: str
    dry_run: bool = False
    max_redrives: int = DEFAULT_MAX_REDRIVES
    batch: int = DEFAULT_BATCH          # DLQ records read per transaction
    halt_in_transaction: int = 0        # TESTING AID: hang inside the n-th transaction

    def group_id(self, settings: Settings) -> str:
        return f"{settings.group_id}-redrive-{self.job}"

    def transactional_id(self, settings: Settings) -> str:
        return f"{settings.transactional_id_prefix}-redrive-{self.job}"


class Verdict(enum.Enum):
    MOVE = "move"
    PARK = "park"                  # re-driven max_redrives times already
    UNRECOVERABLE = "unrecoverable"  # the dead letter kept neither input value nor URL
    SKIP = "skip"                  # not selected


def judge(letter: DeadLetter, selection: Selection, max_redrives: int) -> Verdict:
    if not selection.selects(letter):
        return Verdict.SKIP
    if not letter.rebuildable:
        return Verdict.UNRECOVERABLE
    if letter.redrives >= max_redrives:
        return Verdict.PARK
    return Verdict.MOVE


@dataclass
class Tally:
    """What a run saw and did; ``moved`` only counts committed transactions."""

    read: int = 0
    selected: Counter[str] = field(default_factory=Counter)   # by reason, MOVE verdicts
    moved: Counter[str] = field(default_factory=Counter)
    parked: list[DeadLetter] = field(default_factory=list)
    unrecoverable: list[DeadLetter] = field(default_factory=list)
    skipped: int = 0

    def count(self, letter: DeadLetter, verdict: Verdict) -> None:
        self.read += 1
        if verdict is Verdict.MOVE:
            self.selected[letter.reason] += 1
        elif verdict is Verdict.PARK:
            self.parked.append(letter)
        elif verdict is Verdict.UNRECOVERABLE:
            self.unrecoverable.append(letter)
        else:
            self.skipped += 1

    def confirm(self, moved: Sequence[DeadLetter]) -> None:
        self.moved.update(letter.reason for letter in moved)
