"""Is a partition moving? What the supervisor keeps of it across its tasks' lives.

A task lives once; its partition's progress outlives it: the last committed offset
known (so lag stays true while no task runs), when the partition last committed,
how many tasks in a row ended without committing (the restart backoff), and whether
it waits on an ACL. ``stalled`` is the seconds a partition has had work, or no
running task, without a commit: the signal of a stuck partition that a job-wide
rate hides (docs/operations.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PartitionProgress:
    since: float                  # when assigned, or when an advance was last seen
    committed_offset: int = -1    # the last known; -1 until a task has read it
    failures: int = 0             # tasks in a row that ended without committing
    unauthorized_at: float | None = None  # last refused an ACL (logged once on entering)
    work_since: float | None = None
    listed_stable: int | None = None  # the input's last stable offset, asked for

    def saw(self, offset: int, now: float) -> bool:
        """A task's committed offset, sampled: True if it moved since the last look."""
        if offset <= self.committed_offset:
            return False
        first = self.committed_offset < 0  # read at start: no commit of ours yet
        self.committed_offset = offset
        if not first:
            self.since = now
        return not first

    def stalled(self, has_work: bool, now: float) -> float:
        """Seconds with work and no commit since; 0 while idle."""
        if not has_work:
            self.work_since = None
            return 0.0
        if self.work_since is None:
            self.work_since = now
        return now - max(self.since, self.work_since)
