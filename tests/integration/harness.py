"""What the integration tests share: deterministic files, the service's settings and
the exactly-once check, beside the project's file server, topics and service
processes (tools/). No timing assumptions: every wait is on a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiokafka import AIOKafkaProducer

from tools.fileserver import FileServer, Route
from tools.kafka_io import (
    Topics,
    by_source,
    create_topics,
    lag,
    produce,
    read_all,
    unique,
)
from tools.proc import ROOT, ChildProcess

__all__ = ["ROOT", "ChildProcess", "FileServer", "Route", "Topics", "by_source",
           "create_topics", "lag", "produce", "read_all", "unique"]  # and the waits below


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str,
                     every: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)


async def wait_committed(bootstrap: str, topics: Topics, timeout: float = 90) -> None:
    """Until the group's committed offsets cover every input record."""
    async def committed() -> bool:
        return await lag(bootstrap, topics) == 0
    await wait_until(committed, timeout, "every input committed")


async def http_get(port: int, path: str) -> tuple[int, str]:
    """Status and text of a GET to the service's HTTP port."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.text()


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample of a /metrics text: ``name`` with exactly ``labels``; None if absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    series = f"{name}{{{wanted}}}" if labels else name
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def sampled(port: int, name: str, **labels: str) -> float:
    """One sample of the service's /metrics now; 0 while the series does not exist."""
    return metric((await http_get(port, "/metrics"))[1], name, **labels) or 0.0


async def wait_ready(port: int, timeout: float = 60) -> None:
    """Until /readyz answers 200 (the group joined, every partition's producer ready)."""
    async def ready() -> bool:
        try:
            return (await http_get(port, "/readyz"))[0] == 200
        except aiohttp.ClientError:
            return False
    await wait_until(ready, timeout, "/readyz to answer 200 after the group join")


# -- deterministic transaction files ----------------------------------------------------

def make_items(name: str, count: int) -> list[bytes]:
    """Compact JSON objects, as the service writes them: exact big numbers included."""
    return [(f'{{"id":"{name}-{i}","seq":{i},"amount":{10**25 + i},'
             f'"rate":0.100000000000000000000000000001,"memo":"transfer {i} \u2713"}}').encode()
            for i in range(count)]


def encode(items: list[bytes], fmt: str) -> tuple[bytes, dict[str, str]]:
    """A file body in one of the supported formats, with its response headers."""
    if fmt == "array":
        return b"[\n  " + b",\n  ".join(items) + b"\n]\n", {}
    ndjson = b"".join(item + b"\n" for item in items)
    if fmt == "ndjson":
        return ndjson, {}
    if fmt == "gzip-file":
        return gzip.compress(ndjson), {"Content-Type": "application/gzip"}
    if fmt == "gzip-encoding":
        return gzip.compress(ndjson), {"Content-Encoding": "gzip"}
    raise ValueError(fmt)


def assert_exactly_once(outputs: list, expected: dict[str, list[bytes]]) -> None:
    """Each expected URL's items appear exactly once, byte-equal, in file order."""
    got = by_source(outputs)
    unexpected = set(got) - set(expected)
    assert not unexpected, f"outputs from unexpected sources: {sorted(unexpected)[:3]}"
    for url, values in expected.items():
        records = got.get(url, [])
        indexes = [int(dict(r.headers)["index"]) for r in records]
        assert len(records) == len(values), (
            f"{url}: {len(records)} outputs for {len(values)} transactions "
            f"(indexes {sorted(indexes)[:20]})")
        assert indexes == list(range(len(values))), f"{url}: out of order or duplicated"
        assert [r.value for r in records] == values, f"{url}: payload differs"


def service_env(bootstrap: str, topics: Topics, **extra: str) -> dict[str, str]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "INPUT_TOPIC": topics.input,
        "OUTPUT_TOPIC": topics.output,
        "DLQ_TOPIC": topics.dlq,
        "GROUP_ID": topics.group,
        "HTTP_PORT": "0",
        "DOWNLOAD_ALLOW_PRIVATE_NETWORKS": "true",
        "RETRY_BACKOFF_S": "0.05",
        "RETRY_BACKOFF_MAX_S": "0.5",
        "SHUTDOWN_TIMEOUT_S": "10",
        "LOG_LEVEL": "info",
    }
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def left_open(bootstrap: str, transactional_id: str, topic: str,
                    transaction_timeout_ms: int) -> AsyncIterator[None]:
    """A transaction with one record and no offsets, never ended: what a replica killed
    between its records and its offsets leaves (records go first under transactions v1)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id,
                                transaction_timeout_ms=transaction_timeout_ms)
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"left open", key=b"left open", partition=0)
        yield
    finally:
        with contextlib.suppress(Exception):  # fenced by then
            await producer.stop()
