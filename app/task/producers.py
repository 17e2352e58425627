"""Where a partition task's producer comes from, and where it goes when the task ends.

``ProducerPool`` (TRANSACTIONAL_ID_SCHEME=pod): transactional ids
``{TRANSACTIONAL_ID_PREFIX}-{POD_NAME}-{n}``, n the lowest slot of this replica not in
use. A task that ends normally (revoked, closed) gives its producer back clean (no
transaction open, no error) and the next task takes it warm: no InitProducerId, so a
rebalance costs the partitions that stay or come back nothing. A producer that is
fenced, failed or in doubt (a transaction open or its outcome unknown) is stopped,
never pooled, and its slot initialised again at once: InitProducerId on the same id
fences it and aborts (or completes) what it left, so the partition's next owner does
not wait for the transaction timeout under require_stable.

``OwnProducers`` (scheme partition, and at_least_once): a new producer for every task,
named by its partition, stopped when the task ends; each start fences the previous
owner of the partition's id (docs/design.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.producer.transaction_manager import TransactionState

from app.config import Settings
from app.ops.stats import Stats

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Lease:
    """A started producer lent to one task: its number is a slot or a partition."""

    number: int
    producer: AIOKafkaProducer
    transactional_id: str | None


class Producers(Protocol):
    async def take(self, partition: int) -> Lease: ...

    async def give_back(self, lease: Lease, clean: bool, within: float) -> None: ...

    async def close(self, within: float) -> None: ...


def is_clean(producer: Any) -> bool:
    """Ready for a next transaction: none open or in doubt, no error, its sender alive."""
    txn = getattr(producer, "_txn_manager", None)
    sender = getattr(getattr(producer, "_sender", None), "_sender_task", None)
    return (txn is not None and txn.state is TransactionState.READY
            and sender is not None and not sender.done())


async def _stop(producer: AIOKafkaProducer, within: float) -> None:
    """A transaction left open here is settled by an InitProducerId on its id (or the
    transaction timeout): stop without waiting on it."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), max(0.1, within))


class OwnProducers:
    """One new producer per task, initialised at its start and stopped at its end."""

    def __init__(self, make: Callable[[int], AIOKafkaProducer], stats: Stats,
                 transactional_id: Callable[[int], str | None] = lambda n: None) -> None:
        self.make, self.stats, self.transactional_id = make, stats, transactional_id
        self.in_use = 0

    async def take(self, partition: int) -> Lease:
        producer = self.make(partition)
        try:
            await producer.start()
        except BaseException:
            await asyncio.shield(_stop(producer, 5.0))
            raise
        self.stats.producer_initialised()
        self.in_use += 1
        self.stats.producers_held(idle=0, in_use=self.in_use)
        return Lease(partition, producer, self.transactional_id(partition))

    async def give_back(self, lease: Lease, clean: bool, within: float) -> None:
        self.in_use -= 1
        self.stats.producers_held(idle=0, in_use=self.in_use)
        await _stop(lease.producer, within)

    async def close(self, within: float) -> None:
        pass  # every producer was its task's, stopped with it


class ProducerPool:
    """This replica's transactional producers, by slot; idle ones kept warm."""

    def __init__(self, make: Callable[[int], AIOKafkaProducer], stats: Stats,
                 transactional_id: Callable[[int], str | None]) -> None:
        self.make, self.stats, self.transactional_id = make, stats, transactional_id
        self.idle: dict[int, AIOKafkaProducer] = {}
        self.in_use: set[int] = set()
        self.settling: dict[int, asyncio.Task[None]] = {}  # slots initialised again
        self.closed = False

    def _lowest_free_slot(self) -> int:
        n, taken = 0, self.in_use | self.idle.keys() | self.settling.keys()
        while n in taken:
            n += 1
        return n

    async def take(self, partition: int) -> Lease:
        """A warm producer if one is idle (the lowest slot), else a new one on the
        lowest free slot, initialised."""
        if self.closed:
            raise RuntimeError("the producer pool is closed")
        if self.idle:
            slot = min(self.idle)
            producer = self.idle.pop(slot)
            self.in_use.add(slot)
        else:
            slot = self._lowest_free_slot()
            self.in_use.add(slot)  # reserved while it initialises
            try:
                producer = await self._started(slot)
            except BaseException:
                self.in_use.discard(slot)
                raise
        self._count()
        return Lease(slot, producer, self.transactional_id(slot))

    async def give_back(self, lease: Lease, clean: bool, within: float) -> None:
        """Pooled if the task ended normally and its producer is clean; else stopped,
        and the slot initialised again in the background."""
        self.in_use.discard(lease.number)
        if clean and not self.closed and is_clean(lease.producer):
            self.idle[lease.number] = lease.producer
        else:
            self.settling[lease.number] = asyncio.create_task(
                self._settle(lease, within), name=f"producer-slot-{lease.number}")
        self._count()

    async def close(self, within: float) -> None:
        """Stop every producer, after the slots being initialised again are settled
        (or ``within`` ran out): what they left would otherwise hold its partition's
        next owner until the transaction timeout."""
        self.closed = True
        if self.settling:
            _, late = await asyncio.wait(list(self.settling.values()), timeout=within)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        idle, self.idle = list(self.idle.values()), {}
        await asyncio.gather(*(_stop(producer, 5.0) for producer in idle))
        self._count()

    async def _started(self, slot: int) -> AIOKafkaProducer:
        producer = self.make(slot)
        try:
            await producer.start()  # InitProducerId: fences and settles what the id left
        except BaseException:
            await asyncio.shield(_stop(producer, 5.0))
            raise
        self.stats.producer_initialised()
        return producer

    async def _settle(self, lease: Lease, within: float) -> None:
        try:
            await _stop(lease.producer, within)
            producer = await self._started(lease.number)
        except Exception as exc:  # its next taker initialises the slot
            log.warning("could not initialise transactional id %s again: %r",
                        lease.transactional_id, exc,
                        extra={"event": "producer_settle_failed", "slot": lease.number})
            return
        finally:
            self.settling.pop(lease.number, None)
        if self.closed:
            await _stop(producer, 5.0)
        else:
            self.idle[lease.number] = producer
        self._count()

    def _count(self) -> None:
        self.stats.producers_held(idle=len(self.idle), in_use=len(self.in_use))


def producer_source(settings: Settings, make: Callable[[int], AIOKafkaProducer],
                    stats: Stats) -> Producers:
    """The pool for TRANSACTIONAL_ID_SCHEME=pod under exactly once; else a producer a task."""
    if settings.processing_guarantee != "exactly_once":
        return OwnProducers(make, stats)
    if settings.transactional_id_scheme == "pod":
        return ProducerPool(make, stats, settings.transactional_id)
    return OwnProducers(make, stats, settings.transactional_id)
