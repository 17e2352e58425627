"""The pool of warm producers on fakes: slots, reuse, what is never pooled, closing; and
the tasks that give their producer back clean or not."""

from __future__ import annotations

import asyncio
import dataclasses
import types

import pytest
from aiokafka import errors as kafka
from aiokafka.producer.transaction_manager import TransactionState
from aiokafka.structs import TopicPartition

from app.config import Settings
from app.kafka import clients
from app.kafka.clients import FatalStartupError
from app.kafka.protocol.api_versions import BrokerFeatures
from app.ops.stats import Stats
from app.task.producers import OwnProducers, ProducerPool, is_clean, producer_source
from app.task.supervisor import Supervisor
from tests.unit.fakes import (
    FileDownloader,
    ScriptedProducer,
    Sleeps,
    assigned_consumer,
    context,
    record,
    settings,
    until,
)


class PooledProducer(ScriptedProducer):
    """A scripted producer with the transaction state the pool reads."""

    def __init__(self, number: int, fail=None) -> None:
        super().__init__(fail)
        self.number = number
        self._txn_manager = types.SimpleNamespace(state=TransactionState.UNINITIALIZED)
        self._sender = types.SimpleNamespace(_sender_task=asyncio.get_running_loop()
                                             .create_future())

    def _state(self, state: TransactionState) -> None:
        self._txn_manager.state = state

    async def start(self):
        await super().start()
        self._state(TransactionState.READY)

    async def begin_transaction(self):
        await super().begin_transaction()
        self._state(TransactionState.IN_TRANSACTION)

    async def commit_transaction(self):
        self._state(TransactionState.COMMITTING_TRANSACTION)
        await super().commit_transaction()
        self._state(TransactionState.READY)

    async def abort_transaction(self):
        self._state(TransactionState.ABORTING_TRANSACTION)
        await super().abort_transaction()
        self._state(TransactionState.READY)

    async def stop(self):
        await super().stop()
        self._sender._sender_task.cancel()


class Maker:
    """Makes PooledProducers by slot; ``failing[slot]`` scripts the next one's errors."""

    def __init__(self) -> None:
        self.made: list[PooledProducer] = []
        self.failing: dict[int, dict] = {}

    def __call__(self, number: int) -> PooledProducer:
        self.made.append(PooledProducer(number, self.failing.pop(number, None)))
        return self.made[-1]


def pool(stats: Stats | None = None) -> tuple[ProducerPool, Maker, Stats]:
    maker, stats = Maker(), stats or Stats()
    ids = Settings(transactional_id_prefix="g", pod_name="pod-x").transactional_id
    return ProducerPool(maker, stats, ids), maker, stats  # type: ignore[arg-type]


def sample(stats: Stats, name: str, **labels: str) -> float | None:
    return stats.registry.get_sample_value(name, labels)


async def test_new_producers_take_the_lowest_free_slots_and_carry_the_pod_name():
    producers, maker, stats = pool()
    leases = [await producers.take(partition) for partition in (7, 3, 5)]
    assert [lease.number for lease in leases] == [0, 1, 2]
    assert [lease.transactional_id for lease in leases] == ["g-pod-x-0", "g-pod-x-1",
                                                            "g-pod-x-2"]
    assert [p.calls for p in maker.made] == [["start"]] * 3
    assert sample(stats, "txingest_producer_inits_total") == 3
    assert sample(stats, "txingest_producers", state="in_use") == 3
    maker.failing[1] = {"start": kafka.KafkaConnectionError()}
    await producers.give_back(leases[1], clean=False, within=1)  # settling slot 1 fails
    await until(lambda: not producers.settling, "slot 1 tried again")
    assert 1 not in producers.idle
    retaken = await producers.take(9)
    assert retaken.number == 1 and retaken.transactional_id == "g-pod-x-1", "the lowest free"
    await producers.close(1)


async def test_a_clean_producer_goes_back_warm_and_is_taken_without_an_init():
    producers, maker, stats = pool()
    first, second = await producers.take(0), await producers.take(1)
    await producers.give_back(second, clean=True, within=1)
    await producers.give_back(first, clean=True, within=1)
    assert sample(stats, "txingest_producers", state="idle") == 2
    again = await producers.take(1)
    assert again.number == 0 and again.producer is first.producer, "the lowest idle slot"
    assert len(maker.made) == 2 and first.producer.calls == ["start"], "no second init"
    assert sample(stats, "txingest_producer_inits_total") == 2
    assert sample(stats, "txingest_producers", state="idle") == 1
    assert sample(stats, "txingest_producers", state="in_use") == 1
    await producers.give_back(again, clean=True, within=1)
    await producers.close(1)
    assert all(p.calls[-1] == "stop" for p in maker.made), "closing stops the idle ones"
    with pytest.raises(RuntimeError):
        await producers.take(0)


@pytest.mark.parametrize("state", [TransactionState.IN_TRANSACTION,
                                   TransactionState.COMMITTING_TRANSACTION,
                                   TransactionState.ABORTABLE_ERROR,
                                   TransactionState.FATAL_ERROR])
async def test_a_producer_in_doubt_is_stopped_and_its_slot_initialised_again(state):
    producers, maker, stats = pool()
    lease = await producers.take(0)
    lease.producer._txn_manager.state = state
    await producers.give_back(lease, clean=True, within=1)  # the task thought it clean
    await until(lambda: not producers.settling, "the slot initialised again")
    assert lease.producer.calls == ["start", "stop"]
    fresh = maker.made[1]
    assert fresh.number == 0 and fresh.calls == ["start"], "InitProducerId on the same id"
    assert producers.idle == {0: fresh}
    assert sample(stats, "txingest_producer_inits_total") == 2
    await producers.close(1)


async def test_a_task_that_ended_on_its_own_never_pools_its_producer():
    producers, maker, _ = pool()
    lease = await producers.take(0)
    assert is_clean(lease.producer)
    await producers.give_back(lease, clean=False, within=1)
    await until(lambda: not producers.settling, "the slot initialised again")
    assert lease.producer.calls[-1] == "stop" and producers.idle == {0: maker.made[1]}
    await producers.close(1)


async def test_a_failed_init_frees_its_slot_and_stops_the_producer():
    producers, maker, stats = pool()
    maker.failing[0] = {"start": kafka.KafkaConnectionError()}
    with pytest.raises(kafka.KafkaConnectionError):
        await producers.take(0)
    assert maker.made[0].calls == ["start", "stop"]
    assert (await producers.take(0)).number == 0
    assert sample(stats, "txingest_producer_inits_total") == 1
    await producers.close(1)


async def test_closing_waits_for_a_slot_being_settled_then_stops_it():
    producers, maker, _ = pool()
    lease = await producers.take(0)
    gate = asyncio.Event()
    real = Maker.__call__

    def held(self, number):
        made = real(self, number)
        started = made.start

        async def start():
            await gate.wait()
            await started()
        made.start = start
        return made
    maker.__class__ = type("HeldMaker", (Maker,), {"__call__": held})
    await producers.give_back(lease, clean=False, within=1)
    closing = asyncio.create_task(producers.close(5))
    await until(lambda: len(maker.made) == 2, "the slot being initialised again")
    assert not closing.done(), "close waits for the settling slot"
    gate.set()
    await closing
    assert maker.made[1].calls == ["start", "stop"] and not producers.idle


def test_the_scheme_and_guarantee_choose_the_source():
    stats = Stats()
    make = Maker()
    assert isinstance(producer_source(Settings(), make, stats), ProducerPool)  # type: ignore[arg-type]
    partition = Settings(transactional_id_scheme="partition")
    assert isinstance(producer_source(partition, make, stats), OwnProducers)  # type: ignore[arg-type]
    at_least_once = Settings(processing_guarantee="at_least_once")
    assert isinstance(producer_source(at_least_once, make, stats), OwnProducers)  # type: ignore[arg-type]


TP = TopicPartition("in", 0)


def supervised(*flags: str) -> tuple[Supervisor, Maker]:
    maker, stats = Maker(), Stats()
    ctx = context(settings("--session-timeout-ms", "7000", *flags), assigned_consumer(TP),
                  FileDownloader({"http://f/0": b'{"a":1}'}), maker, Sleeps())
    ids = ctx.settings.transactional_id
    ctx = dataclasses.replace(ctx, stats=stats,
                              producers=ProducerPool(maker, stats, ids))  # type: ignore[arg-type]
    return Supervisor(ctx), maker


async def test_a_revoked_partition_assigned_again_takes_its_warm_producer():
    supervisor, maker = supervised()
    supervisor.assign([TP])
    await until(lambda: supervisor.ready, "first task running")
    supervisor.deliver({TP: [record(0, "http://f/0")]})
    await until(lambda: supervisor.slots[TP].task.committed_offset == 1, "a commit")
    await supervisor.revoke([TP], 1)
    supervisor.assign([TP])
    await until(lambda: supervisor.ready, "second task running")
    assert len(maker.made) == 1 and maker.made[0].calls.count("start") == 1
    assert supervisor.slots[TP].task.producer is maker.made[0]
    await supervisor.close(1)


async def test_a_task_whose_commit_outcome_is_unknown_gives_back_a_producer_never_reused():
    supervisor, maker = supervised()
    supervisor.assign([TP])
    await until(lambda: supervisor.ready, "first task running")
    failed = maker.made[0]
    failed.fail["commit"] = [kafka.KafkaTimeoutError()]
    supervisor.deliver({TP: [record(0, "http://f/0")]})
    await until(lambda: "stop" in failed.calls, "the failed producer stopped")
    await until(lambda: supervisor.ready and supervisor.slots[TP].task.producer is not None,
                "a replacement task")
    assert supervisor.slots[TP].task.producer is not failed
    await until(lambda: not supervisor.context.producers.settling, "slot 0 settled")
    assert [p.number for p in maker.made].count(0) == 2, "slot 0 initialised again"
    await supervisor.close(1)


async def test_pod_ids_are_refused_at_start_without_kip447(monkeypatch):
    class Client:
        def __init__(self, **options): ...

        async def bootstrap(self) -> None: ...

        async def close(self) -> None: ...

    async def no_kip447(client):
        return BrokerFeatures({}, {}, {}, 0)

    monkeypatch.setattr(clients, "AIOKafkaClient", Client)
    monkeypatch.setattr(clients, "cluster_features", no_kip447)
    with pytest.raises(FatalStartupError, match="TRANSACTIONAL_ID_SCHEME=pod needs KIP-447"):
        await clients.transaction_protocol(Settings(pod_name="p"))
    speaking, _ = await clients.transaction_protocol(
        Settings(pod_name="p", transactional_id_scheme="partition"))
    assert speaking.value == "legacy"


async def test_a_task_fenced_by_the_group_does_not_pool_its_producer_though_it_is_clean():
    supervisor, maker = supervised()
    supervisor.assign([TP])
    await until(lambda: supervisor.ready, "first task running")
    fenced = maker.made[0]
    fenced.fail["offsets"] = [kafka.IllegalGenerationError()]  # aborted: the producer works
    supervisor.deliver({TP: [record(0, "http://f/0")]})
    await until(lambda: "stop" in fenced.calls, "the fenced task's producer stopped")
    assert fenced.calls[-2:] == ["abort", "stop"]
    await until(lambda: not supervisor.context.producers.settling, "slot 0 settled")
    assert fenced not in supervisor.context.producers.idle.values()
    await supervisor.close(1)
