"""``python -m app redrive`` against the real broker, with the real service around it:
dead letters of several reasons, a dry run, a filtered re-drive the service then
ingests, and the parking rule. The helpers here serve test_redrive_resume.py too.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from app.config import load_settings
from app.errors import PoisonError
from app.files.budget import MemoryBudget
from app.files.input_url import parse_input_url
from app.files.prepare import Preparer
from app.ops.stats import Stats
from tests.integration.harness import (
    ROOT,
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


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def summary(self) -> str:
        lines = self.out.strip().splitlines()
        return lines[-1] if lines else ""


async def redrive(env: dict[str, str], *args: str, timeout: float = 120) -> Result:
    """Run a re-drive to its end; killed by its pid if it outlives ``timeout``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "redrive", *args, cwd=ROOT, env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"redrive {args} did not finish within {timeout}s") from None
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def start_redrive(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    """A re-drive in the background, stdout and stderr to ``log``; the caller stops it."""
    with open(log, "ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "app", "redrive", *args], cwd=ROOT,
                                env={**os.environ, **env}, stdout=sink, stderr=sink)


def dead_letter(topics: Topics, partition: int, offset: int, value: bytes | None,
                key: bytes | None, reason: str = "http_error",
                redrives: int | None = None):
    """The dead letter the service writes for this input record (its own writer)."""
    headers = [] if redrives is None else [("redrive-count", str(redrives).encode())]
    msg = ConsumerRecord(topics.input, partition, offset, 0, 0, key, value, None,
                         len(key or b""), len(value or b""), headers)
    settings = load_settings(["--input-topic", topics.input, "--dlq-topic", topics.dlq], {})
    preparer = Preparer(settings, None, MemoryBudget(1 << 20), Stats())  # type: ignore[arg-type]
    try:
        url: str | None = parse_input_url(value)
    except PoisonError:
        url = None
    return preparer.dead_letter(msg, url, PoisonError(reason, "test"), 1).records[0]


async def write_dlq(bootstrap: str, topic: str, records: list,
                    timestamps: list[int] | None = None) -> None:
    """Raw records onto the DLQ, in order (``records``: OutRecord-like)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i, r in enumerate(records):
            await producer.send_and_wait(topic, r.value, key=r.key, headers=r.headers,
                                         partition=0,
                                         timestamp_ms=timestamps[i] if timestamps else None)
    finally:
        await producer.stop()


async def committed(bootstrap: str, group: str) -> dict[int, int]:
    """A group's committed offsets by partition, any topic (empty before its first commit)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


def redrive_env(bootstrap: str, topics: Topics) -> dict[str, str]:
    return {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "INPUT_TOPIC": topics.input,
            "OUTPUT_TOPIC": topics.output, "DLQ_TOPIC": topics.dlq, "GROUP_ID": topics.group,
            "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}


# -- tests ----------------------------------------------------------------------------------

def reasons(letters: list) -> dict[str, int]:
    counts: dict[str, int] = {}
    for letter in letters:
        reason = orjson.loads(letter.value)["reason"]
        counts[reason] = counts.get(reason, 0) + 1
    return counts


async def test_filtered_redrive_returns_the_input_records_and_the_service_ingests_them(
        kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=2, name="redrive")
    # Missing now (404), served later; in the three spellings of an input record.
    later = {f"later/{n}": make_items(f"later{n}", 2 + n) for n in range(3)}
    urls = [file_server.url(path) for path in later]
    good = file_server.add("good", Route(encode(make_items("good", 2), "ndjson")[0]))
    nan = [file_server.add(f"nan/{n}", Route(b'{"amount": NaN}\n')) for n in range(2)]
    values = [urls[0].encode(), orjson.dumps(urls[1]), orjson.dumps({"url": urls[2], "n": 1}),
              good.encode(), nan[0].encode(), nan[1].encode(), b"not a url"]
    await produce(kafka_bootstrap, topics.input, values, topics.partitions)
    service = services(service_env(kafka_bootstrap, topics)).start()

    async def caught_up() -> bool:
        return await lag(kafka_bootstrap, topics) == 0
    await wait_until(caught_up, 90, "every input record committed")
    letters = await read_all(kafka_bootstrap, topics.dlq)
    assert reasons(letters) == {"http_error": 3, "invalid_json": 2, "invalid_input_record": 1}
    env = redrive_env(kafka_bootstrap, topics)

    dry = await redrive(env, "--dry-run", "--reason", "http_error,invalid_json")
    assert dry.code == 0, dry.err
    assert "would move 5 (http_error 3, invalid_json 2)" in dry.summary, dry.out
    assert len(await read_all(kafka_bootstrap, topics.input)) == len(values), "dry run moved"

    for path, items in later.items():  # the file server is back
        file_server.add(path, Route(encode(items, "array")[0]))
    moved = await redrive(env, "--reason", "http_error")
    assert moved.code == 0, moved.err
    assert "moved 3 (http_error 3)" in moved.summary, moved.out

    redriven = [r for r in await read_all(kafka_bootstrap, topics.input)
                if "redrive-from" in dict(r.headers)]
    wanted = {f"{topics.dlq}:0:{letter.offset}": letter for letter in letters
              if orjson.loads(letter.value)["reason"] == "http_error"}
    assert sorted(dict(r.headers)["redrive-from"].decode() for r in redriven) == sorted(wanted)
    for r in redriven:
        original = int(r.key)  # produce() keys record i "i" on partition i % partitions
        assert (r.value, r.partition) == (values[original], original % topics.partitions)
        assert dict(r.headers)["redrive-count"] == b"1"

    # A transaction's commit marker ends the input now: the group's offset passes it.
    await wait_until(caught_up, 90, "the re-driven records committed, to the end")
    assert await service.stop() == 0
    expected = {url: later[path] for url, path in zip(urls, later, strict=True)}
    expected[good] = make_items("good", 2)
    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), expected)
    assert len(await read_all(kafka_bootstrap, topics.dlq)) == len(letters)

    again = await redrive(env, "--reason", "http_error")  # the same job: nothing left
    assert again.code == 0 and "moved 0" in again.summary, again.out
    assert len(await read_all(kafka_bootstrap, topics.input)) == len(values) + 3


async def test_a_record_re_driven_max_times_is_parked_not_sent(
        kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="park")
    url = file_server.url("never/there")
    await produce(kafka_bootstrap, topics.input, [url.encode()], 1)
    services(service_env(kafka_bootstrap, topics)).start()
    env = redrive_env(kafka_bootstrap, topics)

    async def letters(n: int) -> list:
        async def arrived() -> bool:
            return len(await read_all(kafka_bootstrap, topics.dlq)) >= n
        await wait_until(arrived, 60, f"{n} dead letters")
        return await read_all(kafka_bootstrap, topics.dlq)

    for count in range(2):
        assert dict((await letters(count + 1))[-1].headers).get("redrive-count") == (
            str(count).encode() if count else None), "the service carries the count over"
        result = await redrive(env, "--max-redrives", "2")
        assert result.code == 0 and "moved 1 (http_error 1)" in result.summary, result.out
    last = (await letters(3))[-1]
    assert dict(last.headers)["redrive-count"] == b"2"
    parked = await redrive(env, "--max-redrives", "2")
    assert parked.code == 0, parked.err
    assert "moved 0; parked 1" in parked.summary, parked.out
    assert f"{topics.dlq}:0:{last.offset}  http_error  redrives=2  url={url}" in parked.out
    assert len(await read_all(kafka_bootstrap, topics.input)) == 3
