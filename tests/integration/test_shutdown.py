"""SIGTERM at any moment after start, from the first imports on, is a clean stop:
exit 0, the `stopped` summary logged, and nothing lost or duplicated (real broker)."""

from __future__ import annotations

import asyncio
import functools
import signal

from tests.integration.harness import (
    Route,
    assert_exactly_once,
    create_topics,
    encode,
    make_items,
    produce,
    read_all,
    service_env,
    wait_committed,
    wait_until,
)
from tools.proc import ChildProcess, handles_signal

# From inside the imports (the first ~0.4 s) through start-up, joining and processing,
# counted from the service's first SIGTERM handler (app/ops/signals.py), not from the fork:
# a signal before any code of ours has run ends the interpreter (the default action),
# and under load that first moment stretches.
DELAYS_S = (0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 3.5, 5.0)


async def test_sigterm_at_any_moment_exits_zero_and_loses_nothing(
        kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=2, name="term")
    expected = {}
    for i in range(8):
        items = make_items(f"term{i}", 3)
        body, headers = encode(items, "ndjson")
        url = file_server.add(f"term{i}.ndjson", Route(body, headers=headers, delay=0.3))
        expected[url] = items
    await produce(kafka_bootstrap, topics.input, [u.encode() for u in expected], topics.partitions)
    env = service_env(kafka_bootstrap, topics, SHUTDOWN_TIMEOUT_S="10")
    for n, delay in enumerate(DELAYS_S):
        service = services(env, name=f"term-{n}").start()
        await wait_until(functools.partial(_catches_sigterm, service), 20,
                         "the service's first SIGTERM handler", every=0.001)
        await asyncio.sleep(delay)  # the moment under test, not a wait for a condition
        code = await service.stop(timeout=25)
        assert code == 0, (f"SIGTERM {delay}s after its first handler: exit {code}\n"
                           f"{service.log_text()[-2000:]}")
        assert service.events("stopped"), f"no stopped summary after {delay}s"
        assert "Traceback" not in service.log_text(), f"traceback after SIGTERM at {delay}s"

    finisher = services(env, name="term-finish").start()
    await wait_committed(kafka_bootstrap, topics)
    assert await finisher.stop() == 0
    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), expected)


async def _catches_sigterm(service: ChildProcess) -> bool:
    return service.pid is not None and handles_signal(service.pid, signal.SIGTERM)
