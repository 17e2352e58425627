"""Exactly once through crashes, rebalances, zombies, fencing and aborts (real broker)."""

from __future__ import annotations

import random
import signal

from aiokafka import AIOKafkaProducer

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
    service_env,
    wait_until,
)


async def load_files(bootstrap, server, topics: Topics, count: int, delay: float = 0.0,
                     name: str = "f") -> dict[str, list[bytes]]:
    expected = {}
    for n in range(count):
        items = make_items(f"{name}{n}", 1 + n % 13)
        body, headers = encode(items, ["ndjson", "array", "gzip-file"][n % 3])
        expected[server.add(f"{name}/{n}", Route(body, headers=headers, delay=delay))] = items
    await produce(bootstrap, topics.input, [u.encode() for u in expected], topics.partitions)
    return expected


async def until_lag_below(bootstrap, topics: Topics, target: int, timeout: float = 90) -> None:
    async def below() -> bool:
        return await lag(bootstrap, topics) <= target
    await wait_until(below, timeout, f"lag <= {target}")


async def test_kill_9_repeatedly(kafka_bootstrap, file_server, services):
    rng = random.Random(7)
    topics = await create_topics(kafka_bootstrap, partitions=4, name="crash")
    expected = await load_files(kafka_bootstrap, file_server, topics, 240, delay=0.01)
    service = services(service_env(kafka_bootstrap, topics)).start()
    remaining = len(expected)
    for _ in range(6):
        remaining -= rng.randint(15, 30)  # kill after a random amount of progress
        await until_lag_below(kafka_bootstrap, topics, remaining)
        service.kill()
        service.start()
    await until_lag_below(kafka_bootstrap, topics, 0, timeout=120)
    assert await service.stop() == 0

    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), expected)
    assert await read_all(kafka_bootstrap, topics.dlq) == []
    assert service.starts == 7


async def test_rebalance_stop_and_restart_a_member(kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=4, name="rebalance")
    env = service_env(kafka_bootstrap, topics, SESSION_TIMEOUT_MS="6000",
                      PREFETCH_PER_PARTITION="2")
    expected = await load_files(kafka_bootstrap, file_server, topics, 80, 0.1, "one")
    a = services(env, "pod-a").start()
    b = services(env, "pod-b").start()
    await wait_until(lambda: _holds(a, 2), 60, "pod-a to hold half the partitions")
    await wait_until(lambda: _holds(b, 2), 60, "pod-b to hold half the partitions")
    await until_lag_below(kafka_bootstrap, topics, 70)
    assert await b.stop() == 0           # clean stop mid-run
    seen = a.log_size()
    await wait_until(lambda: _holds(a, 4, seen), 60, "pod-a to take every partition")
    expected |= await load_files(kafka_bootstrap, file_server, topics, 80, 0.1, "two")
    seen = b.log_size()
    b.start()
    await wait_until(lambda: _holds(b, 2, seen), 60, "pod-b to get its share back")
    expected |= await load_files(kafka_bootstrap, file_server, topics, 80, 0.1, "three")
    await until_lag_below(kafka_bootstrap, topics, 0, timeout=120)
    assert await a.stop() == 0
    assert await b.stop() == 0

    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), expected)
    assert a.events("revoked")


async def _holds(process, count: int, start: int = 0) -> bool:
    """The latest assignment in the process's log (past byte ``start``) has ``count``
    partitions."""
    assigned = process.assignment(start)
    return assigned is not None and len(assigned) == count


async def test_zombie_paused_past_session_timeout_commits_nothing_twice(
        kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=4, name="zombie")
    # Slow enough that work remains well past the session timeout.
    expected = await load_files(kafka_bootstrap, file_server, topics, 240, delay=0.2)
    env = service_env(kafka_bootstrap, topics, SESSION_TIMEOUT_MS="6000",
                      PREFETCH_PER_PARTITION="1")
    zombie = services(env, "pod-zombie").start()
    await wait_until(lambda: _holds(zombie, 4), 60, "zombie joins")
    healthy = services(env, "pod-healthy").start()
    await wait_until(lambda: _logged(healthy, "task_started"), 60, "healthy joins")
    await wait_until(lambda: _logged(zombie, "task_started", after=4), 60,
                     "the zombie to own part of the input")
    zombie.signal(signal.SIGSTOP)
    seen = healthy.log_size()
    await wait_until(lambda: _holds(healthy, 4, start=seen), 60,
                     "the healthy member to take every partition")
    zombie.signal(signal.SIGCONT)
    await until_lag_below(kafka_bootstrap, topics, 0, timeout=120)
    assert await zombie.stop() == 0
    assert await healthy.stop() == 0

    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), expected)
    assert zombie.events("revoked")


async def _logged(process, event: str, after: int = 0) -> bool:
    """The process logged ``event`` more than ``after`` times."""
    return len(process.events(event)) > after


async def test_fenced_task_is_dropped_and_replaced(kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=2, name="fence")
    expected = await load_files(kafka_bootstrap, file_server, topics, 80, delay=0.03)
    env = service_env(kafka_bootstrap, topics, SESSION_TIMEOUT_MS="6000")
    service = services(env).start()
    await until_lag_below(kafka_bootstrap, topics, 70)
    # Another producer takes the id of the replica's first producer (its slot 0): the
    # broker knows it as the service's.
    intruder = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap,
                                transactional_id=f"{topics.group}-pod-0-0")
    await intruder.start()
    await intruder.stop()
    # Work that comes after the fencing, on both partitions, whatever the service had
    # finished by then: the fenced producer is used again.
    expected |= await load_files(kafka_bootstrap, file_server, topics, 20, name="after")
    await until_lag_below(kafka_bootstrap, topics, 0, timeout=120)
    assert await service.stop() == 0

    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), expected)
    assert service.events("fenced")
    assert service.proc is not None and service.starts == 1, "fencing is not a crash"
    # The fenced producer's failure is reported once, as "fenced": no asyncio error about
    # what aiokafka left behind that nobody awaits (app/ops/log.py, loop_exceptions).
    assert "never retrieved" not in service.log_text()


async def test_failed_send_aborts_and_aborted_outputs_stay_invisible(
        kafka_bootstrap, file_server, services):
    # The broker refuses records over 2000 bytes on the output topic; the service's
    # own limit is higher, so the refusal happens inside the transaction.
    topics = await create_topics(kafka_bootstrap, partitions=4, name="abort",
                                 output_config={"max.message.bytes": "2000"})
    small = make_items("small", 12)
    huge = b'{"id":"huge","blob":"' + b"x" * 5000 + b'"}'
    mixed = file_server.add("mixed", Route(b"\n".join(small + [huge])))
    after = file_server.add("after", Route(b"\n".join(make_items("after", 2))))
    await produce(kafka_bootstrap, topics.input, [mixed.encode(), after.encode()], 1)
    env = service_env(kafka_bootstrap, topics, OUTPUT_KEY_FIELD="id")
    service = services(env).start()
    await until_lag_below(kafka_bootstrap, topics, 0)
    assert await service.stop() == 0

    committed = await read_all(kafka_bootstrap, topics.output)
    assert {r.value for r in committed} == set(make_items("after", 2))
    uncommitted = await read_all(kafka_bootstrap, topics.output, "read_uncommitted")
    aborted = [r for r in uncommitted if r.value in set(small)]
    assert aborted, "the small records reached the log inside the aborted transaction"
    dead = await read_all(kafka_bootstrap, topics.dlq)
    assert len(dead) == 1 and b"record_too_large" in dead[0].value
