"""txingest_dead_letters_total{reason}: a dead letter counts under exactly its own reason,
once it is committed, and every reason code the service can give exists at 0 from the start."""

from __future__ import annotations

import ast
from pathlib import Path

from aiokafka import errors as kafka
from aiokafka.structs import TopicPartition

from app.errors import PoisonError
from app.ops.stats import DEAD_LETTER_REASONS, Stats
from app.task.partition import PartitionTask
from tests.unit import source_tree
from tests.unit.fakes import (
    FileDownloader,
    ScriptedProducer,
    assigned_consumer,
    context,
    record,
    settings,
    until,
)

TP = TopicPartition("in", 0)
FILE = b'{"id":1}\n'
APP = Path(__file__).resolve().parents[2] / "app"


def dead_letters(stats: Stats) -> dict[str, float]:
    """reason -> the counter's value, as /metrics would show it."""
    (family,) = [m for m in stats.dead_letters.collect()]
    return {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}


async def run_task(producer: ScriptedProducer, downloader: FileDownloader, urls: list[str]
                   ) -> PartitionTask:
    task = PartitionTask(TP, context(settings(), assigned_consumer(TP), downloader,
                                     lambda partition: producer))
    await task.start()
    task.deliver([record(i, url) for i, url in enumerate(urls)])
    await until(lambda: task.committed_offset == len(urls), "every record committed")
    await task.close(1)
    return task


async def test_a_dead_letter_counts_under_its_reason_only():
    downloader = FileDownloader({"http://files/ok": FILE})
    downloader.failures["http://files/gone"] = [PoisonError("http_error", "HTTP 404")]
    task = await run_task(ScriptedProducer(), downloader,
                          ["http://files/ok", "http://files/gone", "not a url"])
    counts = dead_letters(task.stats)
    assert counts["http_error"] == 1 and counts["invalid_input_record"] == 1
    assert sum(counts.values()) == 2, counts
    assert task.stats.totals["dead_lettered"] == 2 and task.stats.totals["committed"] == 1


async def test_a_record_the_broker_refuses_counts_as_record_too_large():
    producer = ScriptedProducer({"send": kafka.MessageSizeTooLargeError()})
    task = await run_task(producer, FileDownloader({"http://files/0": FILE}),
                          ["http://files/0"])
    counts = dead_letters(task.stats)
    assert counts["record_too_large"] == 1 and sum(counts.values()) == 1, counts


def test_every_reason_series_exists_at_zero_before_any_dead_letter():
    exposition = Stats().exposition().decode()
    for reason in DEAD_LETTER_REASONS:
        assert f'txingest_dead_letters_total{{reason="{reason}"}} 0.0' in exposition, reason


def test_every_reason_code_in_the_code_is_pre_created():
    """The codes given to PoisonError / TransientError (each ends as a dead letter, the
    transient ones after MAX_ATTEMPTS) and to RecordCommitter._dead_letter."""
    raised: set[str] = set()
    for source in APP.rglob("*.py"):
        for node in ast.walk(source_tree.parse(source.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            at = {"PoisonError": 0, "TransientError": 0, "_dead_letter": 2}.get(name or "")
            if at is not None and len(node.args) > at and isinstance(node.args[at], ast.Constant):
                raised.add(node.args[at].value)
    assert len(raised) > 10, raised  # the scan finds the codes at all
    assert raised - set(DEAD_LETTER_REASONS) == set()
