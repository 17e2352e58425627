"""The spool's rules on local files: its room, the sink's switch to disk, reading a
spooled file back slice by slice, and streaming its records through a transaction (a
scripted producer). The same run against the real broker in
tests/integration/test_spool.py."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from aiokafka import errors as kafka

from app.dedup.store import content_key
from app.errors import PoisonError
from app.files import streamed
from app.files.budget import MemoryBudget
from app.files.meter import Meter
from app.files.records import Prepared, StreamedOutputs
from app.files.sink import BodySink, SpoolLater
from app.files.spool import Spool, SpoolFull
from app.files.spooling import Spooling
from app.files.streamed import SpoolReader, validate
from app.kafka.committer import ExactlyOnceCommitter, Outcome
from app.ops.stats import Stats
from tests.unit.fakes import ScriptedProducer, settings


def spool(tmp_path: Path, max_bytes: int = 100) -> Spool:
    made = Spool(str(tmp_path), "pod/0", max_bytes)
    made.clean()
    return made


async def test_room_is_taken_as_written_and_given_back_on_remove(tmp_path):
    room = spool(tmp_path)
    first = room.create("0-1")
    first.write(b"x" * 60)
    second = room.create("0-2")
    with pytest.raises(SpoolFull) as full:
        second.write(b"y" * 50)
    assert full.value.need == 100 and room.used == 60  # twice what it had, at most all
    waiting = asyncio.ensure_future(room.wait_for_room(full.value.need))
    await asyncio.sleep(0)
    assert not waiting.done()
    first.remove()
    await asyncio.wait_for(waiting, 1)
    assert room.used == 0 and not first.path.exists()


def test_a_file_bigger_than_the_whole_spool_is_poison(tmp_path):
    big = spool(tmp_path).create("0-1")
    with pytest.raises(PoisonError) as bad:
        big.write(b"z" * 101)
    assert bad.value.reason == "too_large_for_spool"


def test_start_removes_what_a_killed_process_left_in_its_own_directory(tmp_path):
    left = spool(tmp_path).create("0-7")
    left.write(b"half a file")
    other = Spool(str(tmp_path), "pod-1", 100)
    other.clean()
    kept = other.create("0-1")
    again = Spool(str(tmp_path), "pod/0", 100)
    assert again.dir.name == "pod_0" and again.clean() == 1
    assert not left.path.exists() and kept.path.exists(), "another pod's files stay"


def sink(tmp_path: Path, head: bool, threshold: int = 10) -> BodySink:
    meter = Meter(MemoryBudget(1 << 20).reservation(), "http://files/a.ndjson")
    return BodySink(meter, spool(tmp_path, 1000), threshold, "0-1", lambda: head, False, False)


def test_a_body_past_the_threshold_goes_to_disk_whole(tmp_path):
    body = sink(tmp_path, head=True)
    for piece in (b'{"a":1}\n', b'{"a":2}\n', b'{"a":3}\n'):
        body.count(piece)
        body.append(piece)
    assert body.finish() == b"" and body.file is not None
    assert body.file.path.read_bytes() == b'{"a":1}\n{"a":2}\n{"a":3}\n'
    body.discard()
    assert not body.file.path.exists()


def test_a_body_sent_again_from_its_first_byte_starts_a_new_spool_file(tmp_path):
    """A resumed download the server answered whole (app/files/fetch.py): nothing of the
    first transfer stays, on disk or in the spool's room."""
    body = sink(tmp_path, head=True)
    for piece in (b'{"a":1}\n', b'{"a":2}\n'):
        body.count(piece)
        body.append(piece)
    first = body.file
    assert first is not None
    body.restart()
    assert not first.path.exists() and body.size == 0
    body.count(b'{"b":1}\n')
    body.append(b'{"b":1}\n')
    assert body.finish() == b"" and body.file is not None
    assert body.file.path.read_bytes() == b'{"b":1}\n'
    assert body.spool.used == body.file.size


def test_only_the_head_spools_and_an_array_is_never_spooled(tmp_path):
    later = sink(tmp_path, head=False)
    later.append(b'{"a":1}\n')
    with pytest.raises(SpoolLater):
        later.count(b'{"a":2}\n')
    array = sink(tmp_path, head=True)
    array.append(b' [{"a":1},')
    with pytest.raises(PoisonError) as bad:
        array.count(b'{"a":2}]')
    assert bad.value.reason == "array_too_large"


def reader(path: Path, csv: bool = False, key_field: str | None = None) -> SpoolReader:
    return SpoolReader(path, "http://files/f", csv, 1000, key_field, None, 10)


async def values(spooled: SpoolReader) -> list[bytes]:
    return [v async for _, slice_values in spooled.slices() for v in slice_values]


async def test_ndjson_slices_are_whole_lines_and_errors_name_the_file_s_line(tmp_path,
                                                                              monkeypatch):
    monkeypatch.setattr(streamed, "SLICE_BYTES", 16)
    lines = [json.dumps({"n": i, "pad": "p" * (i % 5)}, separators=(",", ":")).encode()
             for i in range(40)]
    path = tmp_path / "f.spool"
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines[:20]) + b"\n\n" + b"\n".join(lines[20:]))
    assert await values(reader(path)) == lines
    biggest = len(b"http://files/f") + len(lines[39]) + len(b"39")  # key, value, index
    assert await validate(reader(path)) == (40, (biggest, 39))
    path.write_bytes(b"\n".join(lines[:30]) + b"\n{oops\n" + b"\n".join(lines[30:]))
    with pytest.raises(PoisonError) as bad:
        await validate(reader(path))
    assert bad.value.reason == "invalid_json" and bad.value.message.startswith("line 31:")


async def test_csv_slices_keep_a_quoted_line_break_and_number_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(streamed, "SLICE_BYTES", 8)
    path = tmp_path / "f.spool"
    path.write_bytes(b'id,memo\r\n1,"two\r\nlines"\r\n2,plain\r\n3,"x"\r\n')
    assert await values(reader(path, csv=True)) == [
        b'{"id":"1","memo":"two\\r\\nlines"}', b'{"id":"2","memo":"plain"}',
        b'{"id":"3","memo":"x"}']
    path.write_bytes(b"id,memo\n1,a\n2,b,c\n")
    with pytest.raises(PoisonError) as bad:
        await validate(reader(path, csv=True))
    assert bad.value.message.startswith("row 2 (line 3):")


async def test_a_spooled_array_is_refused(tmp_path):
    path = tmp_path / "f.spool"
    path.write_bytes(b'\n  [{"a":1}]')
    with pytest.raises(PoisonError) as bad:
        await validate(reader(path))
    assert bad.value.reason == "array_too_large"


def streamed_outputs(path: Path, count: int, key_field: str | None = None) -> StreamedOutputs:
    return StreamedOutputs("out", [("source-url", b"http://files/f")], count,
                           reader(path, key_field=key_field).slices)


async def test_a_spooled_file_is_sent_with_its_index_and_count_headers(tmp_path, monkeypatch):
    monkeypatch.setattr(streamed, "SLICE_BYTES", 20)
    lines = [b'{"k":"%d","n":%d}' % (i % 3, i) for i in range(9)]
    path = tmp_path / "f.spool"
    path.write_bytes(b"\n".join(lines))
    for key_field in (None, "k"):
        producer = ScriptedProducer()
        done = await ExactlyOnceCommitter("g").commit(producer, {},  # type: ignore[arg-type]
                                                      [streamed_outputs(path, 9, key_field)])
        assert done.outcome is Outcome.DONE and sorted(producer.committed) == sorted(lines)
        by_value = {value: (key, dict(headers)) for key, value, headers in producer.appended}
        assert [int(by_value[v][1]["index"]) for v in lines] == list(range(9))
        assert {by_value[v][1]["count"] for v in lines} == {b"9"}
        assert [by_value[v][0] for v in lines] == [
            b"http://files/f" if key_field is None else b"%d" % (i % 3) for i in range(9)]


async def test_a_bad_slice_inside_the_transaction_aborts_it(tmp_path, monkeypatch):
    monkeypatch.setattr(streamed, "SLICE_BYTES", 20)
    path = tmp_path / "f.spool"
    path.write_bytes(b'{"n":1}\n{"n":2}\n{"n":3}\n' * 3 + b"{bad\n")
    producer = ScriptedProducer()
    result = await ExactlyOnceCommitter("g").commit(producer, {},  # type: ignore[arg-type]
                                                    [streamed_outputs(path, 10)])
    assert result.outcome is Outcome.RETRY and result.aborted
    assert isinstance(result.cause, PoisonError) and result.cause.reason == "invalid_json"
    assert "commit" not in producer.calls and producer.committed == []


def test_a_body_of_tiny_transactions_is_spooled_before_its_bytes_reach_the_threshold(tmp_path):
    body = sink(tmp_path, head=True, threshold=1000)
    tiny = b"{}\n" * 40  # 120 bytes, counted at 2 x 120 + 600 x 40
    body.count(tiny)
    body.append(tiny)
    assert body.file is None
    body.count(tiny)  # what the first piece is counted at passes 6 x the threshold
    body.append(tiny)
    assert body.finish() == b"" and body.file is not None
    assert body.file.path.read_bytes() == tiny * 2


async def test_a_slice_cancelled_while_it_is_parsed_ends_as_cancelled(tmp_path, monkeypatch):
    path = tmp_path / "f.spool"
    path.write_bytes(b'{"n":1}\n' * 100)
    started, release = asyncio.Event(), threading.Event()
    loop = asyncio.get_running_loop()

    def slow(*args, **kwargs):
        loop.call_soon_threadsafe(started.set)
        release.wait(5)
        return []
    monkeypatch.setattr(streamed, "parse_ndjson", slow)
    reading = asyncio.ensure_future(values(reader(path)))
    await started.wait()
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    release.set()


async def test_a_spooled_file_s_content_key_is_the_one_of_the_same_body_in_memory(tmp_path):
    body = b'{"n":1}\n{"n":2}\n'
    spooled = spool(tmp_path, 1000).create("0-3", digest=True)
    spooled.write(body)
    spooled.close()
    spooling = Spooling(settings("--dedup", "content"), None, Stats())
    reservation = MemoryBudget(1 << 30).reservation()
    prepared = await spooling.outputs(spooled, "http://files/f", False, [],
                                      Prepared([], attempts=1, claim=reservation), 1 << 20)
    assert prepared.dedup_key == content_key(body) and prepared.count == 2
    reservation.release()
    assert not spooled.path.exists(), "removed once its record is released"


async def test_an_aborted_transaction_is_retried_from_the_spool(tmp_path, monkeypatch):
    monkeypatch.setattr(streamed, "SLICE_BYTES", 20)
    lines = [b'{"n":%d}' % i for i in range(7)]
    path = tmp_path / "f.spool"
    path.write_bytes(b"\n".join(lines) + b"\n")
    outputs = streamed_outputs(path, 7)
    producer = ScriptedProducer({"offsets": kafka.KafkaTimeoutError()})
    committer = ExactlyOnceCommitter("g")
    first = await committer.commit(producer, {}, [outputs])  # type: ignore[arg-type]
    assert first.outcome is Outcome.RETRY and first.aborted and producer.committed == []
    again = await committer.commit(producer, {}, [outputs])  # type: ignore[arg-type]
    assert again.outcome is Outcome.DONE and producer.committed == lines
    assert producer.sent == lines + lines, "each attempt read the whole file again"
