"""Transactional ids from POD_NAME and the pool of warm producers, on the real broker.

A replica's producers are named ``{prefix}-{POD_NAME}-{n}``; a partition that is revoked
and assigned back to the same replica takes a warm producer (no InitProducerId, counted
by txingest_producer_inits_total); a zombie paused with a transaction open holds the
partition it had sent offsets for until that transaction ends (require_stable), and
the new owner then commits everything exactly once. The stall is measured and printed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.structs import TopicPartition

from app.kafka.protocol.errors import UnstableOffsetCommitError
from app.kafka.protocol.stable_offsets import fetch_stable_offsets
from tests.integration.harness import (
    Route,
    Topics,
    assert_exactly_once,
    create_topics,
    encode,
    lag,
    make_items,
    produce,
    read_all,
    sampled,
    service_env,
    wait_until,
)
from tests.integration.test_faults import load_files
from tools.kafka_io import committed_offsets, end_offsets
from tools.local_kafka import free_port


async def _holds(process, count: int, start: int = 0) -> bool:
    assigned = process.assignment(start)
    return assigned is not None and len(assigned) == count


def _ids(process) -> set[str]:
    return {event["transactional_id"] for event in process.events("task_started")}


async def test_a_partition_back_on_its_replica_keeps_a_warm_producer(
        kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=4, name="pods")
    port = free_port()
    env = service_env(kafka_bootstrap, topics, SESSION_TIMEOUT_MS="6000",
                      PREFETCH_PER_PARTITION="2")
    expected = await load_files(kafka_bootstrap, file_server, topics, 40, 0.05, "one")
    a = services({**env, "HTTP_PORT": str(port)}, "pod-a").start()
    await wait_until(lambda: _holds(a, 4), 60, "pod-a to hold every partition")

    async def inits() -> float:
        return await sampled(port, "txingest_producer_inits_total")
    await wait_until(lambda: _equals(inits, 4), 60, "pod-a's four producers initialised")
    b = services(env, "pod-b").start()
    seen = a.log_size()
    await wait_until(lambda: _holds(a, 2, seen), 60, "pod-b to take half the partitions")
    expected |= await load_files(kafka_bootstrap, file_server, topics, 40, 0.05, "two")

    async def two_idle() -> bool:
        return await sampled(port, "txingest_producers", state="idle") == 2
    await wait_until(two_idle, 30, "pod-a's two revoked partitions' producers idle")
    assert await b.stop() == 0  # static member: its partitions come back after the session
    seen = a.log_size()
    await wait_until(lambda: _holds(a, 4, seen), 60, "pod-a to take every partition back")
    expected |= await load_files(kafka_bootstrap, file_server, topics, 40, 0.05, "three")
    await wait_until(lambda: _no_lag(kafka_bootstrap, topics), 120, "every input committed")
    assert await inits() == 4, "a partition back on its replica initialised a producer"
    assert await sampled(port, "txingest_producers", state="in_use") == 4
    assert await a.stop() == 0

    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), expected)
    assert _ids(a) == {f"{topics.group}-pod-a-{n}" for n in range(4)}
    assert _ids(b) == {f"{topics.group}-pod-b-{n}" for n in range(2)}


async def _equals(sample, value: float) -> bool:
    return await sample() == value


async def _no_lag(bootstrap: str, topics: Topics) -> bool:
    return await lag(bootstrap, topics) == 0


@contextlib.asynccontextmanager
async def group_client(bootstrap: str) -> AsyncIterator[AIOKafkaClient]:
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        yield client
    finally:
        await client.close()


async def unstable(client: AIOKafkaClient, topics: Topics, partitions: set[int]) -> set[int]:
    """Which of ``partitions`` an open transaction holds offsets for (require_stable)."""
    found: set[int] = set()
    tps = [TopicPartition(topics.input, p) for p in partitions]
    with contextlib.suppress(UnstableOffsetCommitError):
        await fetch_stable_offsets(client, topics.group, tps, timeout_s=0.001,
                                   on_unstable=lambda tps: found.update(tp.partition
                                                                        for tp in tps))
    return found


async def big_files(bootstrap: str, server, topics: Topics, count: int
                    ) -> dict[str, list[bytes]]:
    """Files of 6,000 transactions: a replica spends most of its time in a transaction."""
    expected = {}
    for n in range(count):
        items = make_items(f"big{n}", 6000)
        expected[server.add(f"big/{n}", Route(encode(items, "ndjson")[0]))] = items
    await produce(bootstrap, topics.input, [u.encode() for u in expected], topics.partitions)
    return expected


@pytest.mark.parametrize("wakes", [False, True], ids=["stays-paused", "wakes-up"])
async def test_a_zombie_s_open_transaction_holds_its_partition_until_it_ends(
        kafka_bootstrap, file_server, services, wakes):
    """Paused: the new owner fences the departed pod's open transaction (zombies.py) and
    goes on within 15 s of the rebalance, not after the transaction timeout (120 s).
    Woken after the rebalance: it ends the transaction itself, perhaps committing it, and
    the new owner, which waited (require_stable), starts after it: nothing twice."""
    topics = await create_topics(kafka_bootstrap, partitions=4, name="podzombie")
    expected = await big_files(kafka_bootstrap, file_server, topics, 80)
    env = service_env(kafka_bootstrap, topics, SESSION_TIMEOUT_MS="6000")
    zombie = services(env, "pod-zombie").start()
    await wait_until(lambda: _holds(zombie, 4), 60, "the zombie joins")
    healthy = services(env, "pod-healthy").start()
    await wait_until(lambda: _holds(healthy, 2), 60, "the healthy replica joins")
    held = zombie.assignment() or set()
    async with group_client(kafka_bootstrap) as client:
        pending = await pause_inside_a_transaction(zombie, kafka_bootstrap, client, topics,
                                                   held)
        before = await committed_offsets(kafka_bootstrap, topics)
        seen = healthy.log_size()
        await wait_until(lambda: _holds(healthy, 4, seen), 60, "the healthy replica takes all")
        rebalanced = time.monotonic()
        assert pending <= await unstable(client, topics, pending), "settled before the rebalance"
        if wakes:
            zombie.resume()
        stalls = await first_commits(kafka_bootstrap, topics, held, before, rebalanced)
    print(f"stall after the zombie ({'woken' if wakes else 'paused'}), per partition it held "
          f"(s): {stalls}; with offsets pending: {sorted(pending)}")
    zombie.resume()
    await wait_until(lambda: _no_lag(kafka_bootstrap, topics), 120, "every input committed")
    assert await zombie.stop() == 0
    assert await healthy.stop() == 0
    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), expected)
    waited = max(stalls[p] for p in pending)
    assert waited < 15, f"waited {waited}s for the zombie"
    # A woken zombie is a member again: its pending offsets are never fenced. (Under
    # transactions v1, a transaction of its with records and no offsets yet may be swept
    # at the rebalance, while it was still paused.)
    fenced = [e for e in healthy.events("zombie_fenced") if e["cause"] == "offsets"]
    assert bool(fenced) is not wakes, fenced


async def pause_inside_a_transaction(zombie, bootstrap: str, client: AIOKafkaClient,
                                     topics: Topics, held: set[int]) -> set[int]:
    """SIGSTOP the zombie at a moment when a transaction of its holds a partition's
    offsets (checked ten times while it is stopped); the partitions it holds so."""
    for _ in range(20):
        progress = await lag(bootstrap, topics)
        zombie.pause()
        pending, checks = await unstable(client, topics, held), 0

        async def checked() -> bool:
            nonlocal checks, pending
            pending &= await unstable(client, topics, held)
            checks += 1
            return not pending or checks >= 10
        await wait_until(checked, 10, "ten checks of the zombie's pending offsets",
                         every=0.05)
        if pending:
            return pending
        zombie.resume()

        async def moved(progress: int = progress) -> bool:
            return await lag(bootstrap, topics) < progress
        await wait_until(moved, 60, "the zombie to commit something more")
    raise AssertionError("never caught the zombie inside a transaction")


async def first_commits(bootstrap: str, topics: Topics, held: set[int],
                        before: dict[int, int], since: float) -> dict[int, float]:
    """Seconds from ``since`` until each of ``held`` commits past ``before`` (or has no
    input left)."""
    ends = {tp.partition: offset for tp, offset in (await end_offsets(
        bootstrap, topics.input, "read_committed")).items()}
    stalls: dict[int, float] = {}

    async def all_moved() -> bool:
        now = await committed_offsets(bootstrap, topics)
        for p in held - stalls.keys():
            if now.get(p, 0) > before.get(p, 0) or now.get(p, 0) >= ends[p]:
                stalls[p] = round(time.monotonic() - since, 1)
        return stalls.keys() == held
    await wait_until(all_moved, 240, "a commit on every partition the zombie held")
    return stalls
