"""The benchmark's data: deterministic files, the HTTP server that serves them, the inputs.

Every variant of a scenario gets the same files (same seed) behind the same server,
and its own fresh topics. A file's transactions are NDJSON lines whose numbers
orjson prints back unchanged, so the parser takes its fast path (files that need
the exact-number path parse slower; none here).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tools.fileserver import RawServer, Route, answer_routes
from tools.kafka_io import Topics, create_topics, produce


@dataclass(frozen=True)
class Spec:
    """One scenario's data and pacing."""

    files: int
    partitions: int
    latency_ms: int
    large: bool = False
    seed: int = 7
    rate: float = 0.0  # S4: inputs published per second during the run (0: all before)


@dataclass
class Files:
    bodies: list[bytes]
    counts: list[int]  # transactions per file, by file number

    @property
    def transactions(self) -> int:
        return sum(self.counts)


def _line(n: int, i: int, rng: random.Random, memo: str) -> str:
    cents = rng.randrange(100, 10**9)
    cents += 1 if cents % 10 == 0 else 0  # 12.30 would print as 12.3: keep the fast path
    return (f'{{"tx":"f{n:06d}-{i:06d}","account":"acct-{rng.randrange(10**6):06d}",'
            f'"amount":{cents // 100}.{cents % 100:02d},"currency":"EUR",'
            f'"booked":"2026-11-27T07:{i % 60:02d}:{n % 60:02d}Z"{memo}}}')


def small_file(n: int, seed: int) -> tuple[bytes, int]:
    """A few transactions (2-5), about 130 bytes each."""
    rng = random.Random(seed * 1_000_003 + n)
    count = 2 + n % 4
    return "".join(_line(n, i, rng, "") + "\n" for i in range(count)).encode(), count


def large_file(n: int, seed: int) -> tuple[bytes, int]:
    """2-5 MB: thousands of transactions of about 250 bytes."""
    rng = random.Random(seed * 1_000_003 + n)
    target = rng.randrange(2_000_000, 5_000_000)
    memo = ',"memo":"' + "invoice settlement batch " * 4 + '","channel":"sepa-credit"'
    lines: list[str] = []
    size = 0
    while size < target:
        line = _line(n, len(lines), rng, memo) + "\n"
        lines.append(line)
        size += len(line)
    return "".join(lines).encode(), len(lines)


def make_files(spec: Spec) -> Files:
    make = large_file if spec.large else small_file
    bodies, counts = [], []
    for n in range(spec.files):
        body, count = make(n, spec.seed)
        bodies.append(body)
        counts.append(count)
    return Files(bodies, counts)


def url(base: str, n: int) -> str:
    return f"{base}/f/{n}"


async def serve(files: Files, latency_ms: int) -> RawServer:
    """Serve file n at /f/n after latency_ms (the server's base_url is the base), with the
    lean responder: the file server shares the service's cores here, unlike in production."""
    headers = {"Content-Type": "application/x-ndjson"}
    routes = {f"f/{n}": Route(body, headers=headers, delay=latency_ms / 1000)
              for n, body in enumerate(files.bodies)}
    return await RawServer(answer_routes(routes)).start()


async def fresh_topics(bootstrap: str, spec: Spec, base: str, name: str) -> Topics:
    """New input/output/DLQ topics and group; file n's URL at partition n % P, offset n // P."""
    topics = await create_topics(bootstrap, spec.partitions, name=name)
    await produce(bootstrap, topics.input, [url(base, n).encode() for n in range(spec.files)],
                  spec.partitions)
    return topics


def file_number(partition: int, offset: int, partitions: int) -> int:
    """Inverse of the round-robin layout of the inputs."""
    return offset * partitions + partition
