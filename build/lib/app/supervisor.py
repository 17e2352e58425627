"""The task manager: one PartitionTask per assigned partition.

Assignment creates tasks, revocation closes them; a task that ends on its own is
replaced while its partition is still ours. Fencing is not a crash: the task is
dropped and, if the partition is still assigned after a session timeout (by then
a zombie's consumer has noticed it lost the partition), a new one starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition

from app.config import Settings
from app.partition import PartitionTask, TaskFailed, TaskFenced
from app.prepare import Preparer, backoff
from app.stats import Stats

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, settings: Settings, consumer: AIOKafkaConsumer, preparer: Preparer,
                 stats: Stats, make_producer: Callable[[int], AIOKafkaProducer]) -> None:
        self.settings = settings
        self.consumer = consumer
        self.preparer = preparer
        self.stats = stats
        self.make_producer = make_producer
        self.tasks: dict[TopicPartition, PartitionTask] = {}
        self._lives: dict[TopicPartition, asyncio.Task[None]] = {}
        self._assigned: set[TopicPartition] = set()
        self.joined = False

    @property
    def ready(self) -> bool:
        """Joined the group, and every assigned partition's producer is initialised."""
        return self.joined and all(task.ready for task in self.tasks.values())

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self.joined = True
        for tp in partitions:
            self._assigned.add(tp)
            if tp not in self._lives:
                self._spawn(tp, delay=0.0, failures=0)

    async def revoke(self, partitions: Iterable[TopicPartition], timeout: float) -> None:
        partitions = [tp for tp in partitions if tp in self._assigned]
        self._assigned.difference_update(partitions)
        for tp in partitions:
            with contextlib.suppress(KeyError):
                self.stats.lag.remove(str(tp.partition))
        await asyncio.gather(*(self._stop(tp, timeout) for tp in partitions))

    async def close(self, timeout: float) -> None:
        await self.revoke(list(self._assigned), timeout)

    def deliver(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        for tp, records in batch.items():
            task = self.tasks.get(tp)
            if task is not None:
                task.deliver(records)

    def observe(self) -> None:
        """Refresh the gauges that describe the held partitions."""
        self.stats.assigned.set(len(self.tasks))
        self.stats.inflight.set(sum(task.pending for task in self.tasks.values()))
        for tp, task in self.tasks.items():
            stable = self.consumer.last_stable_offset(tp)
            if stable is not None and task.committed_offset >= 0:
                self.stats.lag.labels(str(tp.partition)).set(max(0, stable - task.committed_offset))

    def _spawn(self, tp: TopicPartition, delay: float, failures: int) -> None:
        task = PartitionTask(tp, self.settings, self.consumer, self.preparer, self.stats,
                             self.make_producer)
        self.tasks[tp] = task
        self._lives[tp] = asyncio.create_task(self._live(task, delay, failures))

    async def _live(self, task: PartitionTask, delay: float, failures: int) -> None:
        """Run one task to its end and decide what comes next."""
        tp, next_delay = task.tp, 0.0
        try:
            if delay:
                await asyncio.sleep(delay)
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
            log.warning("partition task could not run: %r", exc, extra={"partition": tp.partition})
            failures += 1
            next_delay = backoff(failures, self.settings.retry_backoff_s,
                                 self.settings.retry_backoff_max_s)
        finally:
            await task.terminate()
        self.stats.restarted()
        if tp in self._assigned and self.tasks.get(tp) is task:
            self._spawn(tp, next_delay, failures)

    async def _stop(self, tp: TopicPartition, timeout: float) -> None:
        task = self.tasks.pop(tp, None)
        life = self._lives.pop(tp, None)
        if task is not None and task.running:
            await task.close(timeout)  # its life then ends on its own
        elif life is not None:
            life.cancel()  # still starting, or waiting to restart
        if life is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await life

