"""A partition's progress across its tasks' lives: the stalled seconds behind the
per-partition alert (deploy/observability), zero while idle, growing while stuck."""

from __future__ import annotations

from app.task.progress import PartitionProgress


def test_an_idle_partition_is_never_stalled():
    progress = PartitionProgress(since=0.0)
    progress.saw(10, 1.0)
    assert progress.stalled(has_work=False, now=1_000.0) == 0


def test_stalled_counts_from_when_work_appeared_not_from_the_last_commit():
    progress = PartitionProgress(since=0.0)
    progress.saw(10, 1.0)  # read at start
    assert progress.stalled(has_work=False, now=500.0) == 0
    assert progress.stalled(has_work=True, now=600.0) == 0
    assert progress.stalled(has_work=True, now=700.0) == 100


def test_a_commit_restarts_the_count_and_the_first_offset_read_is_not_one():
    progress = PartitionProgress(since=0.0)
    assert progress.saw(10, 5.0) is False, "the offset a task read at start"
    assert progress.stalled(has_work=True, now=50.0) == 0, "work seen first"
    assert progress.stalled(has_work=True, now=55.0) == 5
    assert progress.saw(10, 60.0) is False
    assert progress.saw(12, 70.0) is True
    assert progress.stalled(has_work=True, now=75.0) == 5
    assert progress.saw(11, 80.0) is False, "an older sample is no progress"
