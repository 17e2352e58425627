"""Re-drive exactly once when killed half-way; time and offset filters; old dead letters.

Dead letters here are written straight onto the DLQ by the service's own writer
(Preparer.dead_letter), so each test controls their number, order and time.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

import orjson
from aiokafka.structs import TopicPartition

from tests.integration.harness import create_topics, read_all, wait_until
from tests.integration.test_redrive import (
    committed,
    dead_letter,
    redrive,
    redrive_env,
    start_redrive,
    write_dlq,
)
from tools.kafka_io import end_offsets

LETTERS = 30
BATCH = 4
HALT_IN = 3  # transactions 1-2 commit; 3 is open, its sends acknowledged, when killed


async def test_a_redrive_killed_in_a_transaction_and_run_again_moves_each_letter_once(
        kafka_bootstrap, tmp_path):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="resume")
    values = [f"http://files.example/{n}.ndjson".encode() for n in range(LETTERS)]
    await write_dlq(kafka_bootstrap, topics.dlq, [
        dead_letter(topics, 0, n, value, f"k{n}".encode()) for n, value in enumerate(values)])
    env = redrive_env(kafka_bootstrap, topics)
    job = ["--job", "resume-test", "--batch", str(BATCH)]
    group = f"{topics.group}-redrive-resume-test"
    log = tmp_path / "redrive.log"
    first = start_redrive(env, log, *job, "--test-halt-in-transaction", str(HALT_IN))
    try:
        async def halted() -> bool:
            sent = (await end_offsets(kafka_bootstrap, topics.input, "read_uncommitted"))[
                TopicPartition(topics.input, 0)]
            return (b"test halt in transaction" in log.read_bytes()
                    and (await committed(kafka_bootstrap, group)).get(0) == (HALT_IN - 1) * BATCH
                    and sent == (HALT_IN - 1) * (BATCH + 1) + BATCH)  # + commit markers
        await wait_until(halted, 60, "the re-drive halted inside its transaction "
                         f"{HALT_IN}: {log.read_bytes()[-500:]!r}")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)

    second = await redrive(env, *job)
    assert second.code == 0, second.err
    rest = LETTERS - (HALT_IN - 1) * BATCH
    assert f"moved {rest} (http_error {rest})" in second.summary, second.out

    moved = await read_all(kafka_bootstrap, topics.input)
    origins = sorted(int(dict(r.headers)["redrive-from"].rsplit(b":", 1)[1]) for r in moved)
    assert origins == list(range(LETTERS)), "a dead letter moved twice or not at all"
    assert all(r.value == values[int(r.key[1:])] for r in moved)
    # The killed run's open transaction did reach the log, and stays invisible.
    everything = await read_all(kafka_bootstrap, topics.input, isolation="read_uncommitted")
    assert len(everything) == LETTERS + BATCH
    assert (await committed(kafka_bootstrap, group))[0] == LETTERS


async def test_time_and_offset_filters_select_their_range_only(kafka_bootstrap):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="window")
    # Whole minutes within the last hour: brokers refuse times far from their clock.
    t0 = (int(time.time()) // 60 - 30) * 60_000
    await write_dlq(kafka_bootstrap, topics.dlq, [
        dead_letter(topics, 0, n, f"http://files.example/{n}".encode(), None,
                    reason="download_timeout" if n % 2 else "http_error")
        for n in range(10)], timestamps=[t0 + n * 60_000 for n in range(10)])
    env = redrive_env(kafka_bootstrap, topics)

    # Minutes 3-6 (until is exclusive): letters 3, 4, 5, 6.
    window = await redrive(env, "--dry-run", "--since", _iso(t0 + 3 * 60_000) + "Z",
                           "--until", _iso(t0 + 7 * 60_000))  # no zone: UTC
    assert window.code == 0, window.err
    assert "would move 4 (download_timeout 2, http_error 2)" in window.summary, window.out
    by_offset = await redrive(env, "--partition", "0", "--from-offset", "7",
                              "--to-offset", "8", "--reason", "download_timeout")
    assert by_offset.code == 0 and "moved 1 (download_timeout 1)" in by_offset.summary
    moved = await read_all(kafka_bootstrap, topics.input)
    assert [dict(r.headers)["redrive-from"] for r in moved] == [f"{topics.dlq}:0:7".encode()]


async def test_dead_letters_from_before_the_input_field_are_rebuilt_from_their_url(
        kafka_bootstrap):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="oldfmt")
    url = "http://files.example/old.ndjson"
    old = [orjson.dumps({"url": url, "reason": "http_error", "error": "HTTP 503",
                         "attempts": 5, "source": {"topic": topics.input, "partition": 0,
                                                   "offset": 4}}),
           orjson.dumps({"url": None, "reason": "invalid_input_record", "error": "blank",
                         "attempts": 1, "source": {"topic": topics.input, "partition": 0,
                                                   "offset": 5}}),
           b"not a dead letter"]
    await write_dlq(kafka_bootstrap, topics.dlq, [
        _Raw(b"key", value) for value in old])
    result = await redrive(redrive_env(kafka_bootstrap, topics))
    assert result.code == 0, result.err
    assert "moved 1 (http_error 1); parked 0; cannot re-drive 2" in result.summary, result.out
    [moved] = await read_all(kafka_bootstrap, topics.input)
    assert (moved.key, moved.value) == (b"key", url.encode())


class _Raw:
    def __init__(self, key: bytes, value: bytes) -> None:
        self.key, self.value, self.headers = key, value, []


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None).isoformat()
