"""The task manager: one PartitionTask per assigned partition, and the rebalance listener.

Assignment creates tasks, revocation closes them; a task that ends on its own is
replaced while its partition is still ours. Fencing is not a crash: the task is
dropped and, if the partition is still assigned after a session timeout (by then
a zombie's consumer has noticed it lost the partition), a new one starts.
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

from app.errors import TaskFailed, TaskFenced, backoff
from app.partition import PartitionTask, TaskContext, TaskState

log = logging.getLogger(__name__)
THRASH_REBALANCES = 5


@dataclass
class Slot:
    """An assigned partition: its current task and the coroutine that runs its lives."""

    task: PartitionTask
    life: asyncio.Task[None]


class Supervisor:
    def __init__(self, context: TaskContext) -> None:
        self.context = context
        self.settings, self.consumer, self.stats = context.settings, context.consumer, context.stats
        self.slots: dict[TopicPartition, Slot] = {}
        self.joined = False

    @property
    def ready(self) -> bool:
        """Joined the group, and every assigned partition's task is running."""
        return self.joined and all(slot.task.ready for slot in self.slots.values())

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self.joined = True
        for tp in partitions:
            if tp not in self.slots:
                self._spawn(tp, delay=0.0, failures=0)

    async def revoke(self, partitions: Iterable[TopicPartition], timeout: float) -> None:
        slots = [(tp, self.slots.pop(tp)) for tp in partitions if tp in self.slots]
        for tp, _ in slots:
            with contextlib.suppress(KeyError):
                self.stats.lag.remove(str(tp.partition))
        await asyncio.gather(*(self._stop(slot, timeout) for _, slot in slots))

    async def close(self, timeout: float) -> None:
        await self.revoke(list(self.slots), timeout)

    def deliver(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        for tp, records in batch.items():
            slot = self.slots.get(tp)
            if slot is not None:
                slot.task.deliver(records)

    def observe(self) -> None:
        """Refresh the gauges that describe the held partitions; wake an idle task whose
        committed offset is short of the last stable offset: the consumer may have
        passed transaction markers or aborted records it never returns (app/partition.py)."""
        self.stats.assigned.set(len(self.slots))
        self.stats.inflight.set(sum(slot.task.pending for slot in self.slots.values()))
        budget = self.context.preparer.budget
        self.stats.memory_reserved.set(budget.used)
        self.stats.memory_peak.set(budget.peak)
        for tp, slot in self.slots.items():
            stable = self.consumer.last_stable_offset(tp)
            committed = slot.task.committed_offset
            if stable is not None and committed >= 0:
                self.stats.lag.labels(str(tp.partition)).set(max(0, stable - committed))
                if stable > committed:
                    slot.task.nudge()

    def _spawn(self, tp: TopicPartition, delay: float, failures: int) -> None:
        task = PartitionTask(tp, self.context)
        life = asyncio.create_task(self._live(task, delay, failures))
        self.slots[tp] = Slot(task, life)

    async def _live(self, task: PartitionTask, delay: float, failures: int) -> None:
        """Run one task to its end and decide what comes next."""
        tp, next_delay = task.tp, 0.0
        try:
            if delay:
                await self.context.sleep(delay)
            await task.start()
            await task.wait()
            return  # closed by revoke or shutdown
        except TaskFenced as exc:
            log.warning("partition fenced by another producer; dropping its task: %s", exc,
                        extra={"event": "fenced", "partition": tp.partition})
            next_delay = self.settings.session_timeout_ms / 1000
        except TaskFailed as exc:
            log.warning("partition task failed; starting a new producer: %s", exc,
                        extra={"event": "task_failed", "partition": tp.partition})
            failures += 1
        except Exception as exc:  # e.g. init_transactions while the broker is down
            log.warning("partition task could not run: %r", exc,
                        extra={"event": "task_failed", "partition": tp.partition})
            failures += 1
            next_delay = backoff(failures, self.settings.retry_backoff_s,
                                 self.settings.retry_backoff_max_s)
        finally:
            await task.terminate()
        self.stats.restarted()
        slot = self.slots.get(tp)
        if slot is not None and slot.task is task:
            self._spawn(tp, next_delay, failures)

    @staticmethod
    async def _stop(slot: Slot, timeout: float) -> None:
        if slot.task.state is TaskState.RUNNING:
            await slot.task.close(timeout)  # its life then ends on its own
        else:
            slot.life.cancel()  # still starting, or waiting to restart
        with contextlib.suppress(asyncio.CancelledError):
            await slot.life


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
