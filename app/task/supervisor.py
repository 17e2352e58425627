"""The task manager: one PartitionTask per assigned partition, and the rebalance listener.

Assignment creates tasks, revocation closes them; a task that ends on its own is
replaced while its partition is still ours, never in a tight loop: after a failure
with backoff and jitter (growing while tasks keep failing without a commit). Fencing
is not a crash: the task is dropped and, if the partition is still assigned after a
session timeout (by then a zombie's consumer has noticed it lost the partition), a
new one starts. An ACL the broker refuses is a setting to fix, not a crash: the
partition waits, says so once, and tries again every RETRY_BACKOFF_MAX_S.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import ConsumerRebalanceListener
from aiokafka.structs import ConsumerRecord, TopicPartition

from app.errors import Kind, TaskFailed, TaskFenced, TaskUnauthorized, backoff, classify
from app.task.context import TaskContext
from app.task.fencing import sweep_departed
from app.task.partition import PartitionTask, TaskState
from app.task.progress import PartitionProgress

log = logging.getLogger(__name__)
THRASH_REBALANCES = 5


@dataclass
class Slot:
    """An assigned partition: its current task and the coroutine that runs its lives."""

    task: PartitionTask
    life: asyncio.Task[None]
    progress: PartitionProgress


class Supervisor:
    def __init__(self, context: TaskContext) -> None:
        self.context = context
        self.settings, self.consumer, self.stats = context.settings, context.consumer, context.stats
        self.slots: dict[TopicPartition, Slot] = {}
        self.joined = False
        self._sweep: asyncio.Task[None] | None = None  # of departed replicas' transactions

    @property
    def ready(self) -> bool:
        """Joined the group, and every assigned partition's task is running."""
        return self.joined and all(slot.task.ready for slot in self.slots.values())

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self.joined = True
        partitions = list(partitions)
        for tp in partitions:
            if tp not in self.slots:
                self.stats.partition_assigned(tp.partition)
                self._spawn(tp, 0.0, PartitionProgress(since=time.monotonic()))
        if (self.context.stable_offsets and self.settings.transactional_id_scheme == "pod"
                and any(tp.partition == 0 for tp in partitions)):
            self._sweep = asyncio.create_task(
                sweep_departed(self.settings, self.stats, partitions))

    async def revoke(self, partitions: Iterable[TopicPartition], timeout: float) -> None:
        slots = [(tp, self.slots.pop(tp)) for tp in partitions if tp in self.slots]
        for tp, _ in slots:
            self.stats.partition_revoked(tp.partition)
        await asyncio.gather(*(self._stop(slot, timeout) for _, slot in slots))

    async def close(self, timeout: float) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        await self.revoke(list(self.slots), timeout)

    def deliver(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        for tp, records in batch.items():
            slot = self.slots.get(tp)
            if slot is not None:
                slot.task.deliver(records)

    def observe(self) -> None:
        """Refresh the gauges that describe the held partitions; wake an idle task whose
        committed offset is short of the last stable offset: the consumer may have
        passed transaction markers or aborted records it never returns (app/task/partition.py)."""
        self.stats.assigned.set(len(self.slots))
        self.stats.inflight.set(sum(slot.task.pending for slot in self.slots.values()))
        budget = self.context.preparer.budget
        self.stats.memory_reserved.set(budget.used)
        self.stats.memory_peak.set(budget.peak)
        now = time.monotonic()
        for tp, slot in self.slots.items():
            self._observe_partition(tp, slot, now)

    async def list_stable_offsets(self) -> None:
        """Ask for the input's last stable offsets: a paused partition (its window full,
        or no task running) is not fetched, and its lag would freeze at its last fetch's."""
        try:  # end_offsets may wait for a partition the broker does not know
            listed = await asyncio.wait_for(self.consumer.end_offsets(list(self.slots)), 10)
        except Exception as exc:  # the lag gauge's freshness only
            log.debug("could not list the input's end offsets: %r", exc)
            return
        for tp, offset in listed.items():
            slot = self.slots.get(tp)
            if slot is not None:
                slot.progress.listed_stable = offset

    def _observe_partition(self, tp: TopicPartition, slot: Slot, now: float) -> None:
        task, progress, label = slot.task, slot.progress, str(tp.partition)
        advanced = progress.saw(task.committed_offset, now)
        stable, committed = self.consumer.last_stable_offset(tp), progress.committed_offset
        if progress.listed_stable is not None:
            stable = max(stable or 0, progress.listed_stable)
        lag = 0
        if stable is not None and committed >= 0:  # kept true while no task runs
            lag = max(0, stable - committed)
            self.stats.lag.labels(label).set(lag)
            if lag:
                task.nudge()
        has_work = not task.ready or task.pending > 0 or lag > 0
        self.stats.stalled.labels(label).set(progress.stalled(has_work, now))
        opened = task.open_since
        self.stats.transaction_open.labels(label).set(0 if opened is None else now - opened)
        refused = progress.unauthorized_at
        if refused is not None and (advanced or (
                task.ready and now - refused > 2 * self.settings.retry_backoff_max_s)):
            progress.unauthorized_at = None
            self.stats.unauthorized.labels(label).set(0)
            log.info("partition authorized again", extra={"event": "authorized",
                                                          "partition": tp.partition})

    def _spawn(self, tp: TopicPartition, delay: float, progress: PartitionProgress) -> None:
        task = PartitionTask(tp, self.context)
        life = asyncio.create_task(self._live(task, delay, progress))
        self.slots[tp] = Slot(task, life, progress)

    async def _live(self, task: PartitionTask, delay: float, progress: PartitionProgress
                    ) -> None:
        """Run one task to its end and decide what comes next."""
        try:
            if delay:
                await self.context.sleep(delay)
            await task.start()
            await task.wait()
            return  # closed by revoke or shutdown
        except Exception as exc:  # e.g. init_transactions while the broker is down
            cause, next_delay = self._ended(task, progress, exc)
        finally:
            await task.terminate()
        self.stats.restarted(task.tp.partition, cause)
        slot = self.slots.get(task.tp)
        if slot is not None and slot.task is task:
            self._spawn(task.tp, next_delay, progress)

    def _ended(self, task: PartitionTask, progress: PartitionProgress, exc: Exception
               ) -> tuple[str, float]:
        """Why a task ended on its own (logged), and how long until the next one starts."""
        extra = {"partition": task.tp.partition}
        progress.failures = 1 if task.progressed else progress.failures + 1
        if isinstance(exc, TaskFenced):
            log.warning("partition fenced by another producer; dropping its task: %s", exc,
                        extra={"event": "fenced", **extra})
            return "fenced", self.settings.session_timeout_ms / 1000
        if isinstance(exc, TaskUnauthorized) or classify(exc) is Kind.UNAUTHORIZED:
            # Its commits came before the refusal: seen later, they are no sign of an ACL fixed.
            progress.saw(task.committed_offset, time.monotonic())
            return "unauthorized", self._unauthorized(task.tp, progress, exc)
        delay = backoff(progress.failures, self.settings.retry_backoff_s,
                        self.settings.retry_backoff_max_s)
        if isinstance(exc, TaskFailed):
            log.warning("partition task failed; a new producer in %.1fs: %s", delay, exc,
                        extra={"event": "task_failed", **extra})
            return "failed", delay
        log.warning("partition task could not run; trying again in %.1fs: %r", delay, exc,
                    extra={"event": "task_failed", **extra})
        return "start_failed", delay

    def _unauthorized(self, tp: TopicPartition, progress: PartitionProgress,
                      exc: Exception) -> float:
        """One error line on entering the state; the gauge says it while it lasts."""
        wait, first = self.settings.retry_backoff_max_s, progress.unauthorized_at is None
        progress.unauthorized_at = time.monotonic()
        if first:
            self.stats.unauthorized.labels(str(tp.partition)).set(1)
            log.error("partition waits: the broker refused an ACL this service needs "
                      "(Write on the output, dead-letter or dedup topic, the group, or the "
                      "transactional id); trying again every %.0fs: %s", wait, exc,
                      extra={"event": "unauthorized", "partition": tp.partition})
        else:
            log.debug("still not authorized: %s", exc, extra={"partition": tp.partition})
        return wait

    @staticmethod
    async def _stop(slot: Slot, timeout: float) -> None:
        """Within ``timeout`` in all: one budget for the whole revoke."""
        deadline = time.monotonic() + timeout
        if slot.task.state is TaskState.RUNNING:
            await slot.task.close(timeout)  # its life then ends on its own
        else:
            slot.life.cancel()  # still starting, or waiting to restart
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            # A task cancelled while starting stops its producer in its life's last step.
            await asyncio.wait_for(slot.life, max(0.1, deadline - time.monotonic()))


class Rebalance(ConsumerRebalanceListener):
    """aiokafka awaits these before rejoining: closing here finishes in time."""

    def __init__(self, supervisor: Supervisor, timeout: float, pod_name: str) -> None:
        self.supervisor = supervisor
        self.timeout = timeout
        self.pod_name = pod_name
        self._recent: collections.deque[float] = collections.deque(maxlen=THRASH_REBALANCES)

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            log.info("partitions revoked",
                     extra={"event": "revoked", "partitions": _numbers(revoked)})
        await self.supervisor.revoke(revoked, self.timeout)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned",
                 extra={"event": "assigned", "partitions": _numbers(assigned)})
        self.supervisor.assign(assigned)
        self._recent.append(time.monotonic())
        if len(self._recent) == THRASH_REBALANCES and self._recent[-1] - self._recent[0] < 60:
            # aiokafka reports a duplicate group.instance.id only as "member_id not recognized".
            log.warning("%d rebalances within a minute: replicas are joining and leaving "
                        "often, or another process uses POD_NAME=%s (each would take this "
                        "member's slot in turn)", THRASH_REBALANCES, self.pod_name)
            self._recent.clear()


def _numbers(partitions: set[TopicPartition]) -> list[int]:
    return sorted(tp.partition for tp in partitions)
