"""The chaos checker on synthetic records: a clean run passes, and each verdict fails
on the anomaly it exists for (no Kafka, no processes; milliseconds)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pytest

from chaos.checker import check
from chaos.txnlog import Entry, Out, fates

TOPIC = "in"


@dataclass(frozen=True)
class W:
    url: str | None
    items: tuple[bytes, ...] | None
    dlq_reason: str | None = None


def url(n: int) -> str:
    return f"http://127.0.0.1:1/f/{n}.ndjson"


def items(n: int, count: int) -> tuple[bytes, ...]:
    return tuple(orjson.dumps({"file": n, "seq": i}) for i in range(count))


# Input partition 0: files 0 (3 items), 1 (2 items); partition 1: file 2 (1 item), a poison file.
INPUTS = {
    (0, 0): W(url(0), items(0, 3)),
    (0, 1): W(url(1), items(1, 2)),
    (1, 0): W(url(2), items(2, 1)),
    (1, 1): W(url(3), None, "invalid_json"),
}
OUT_PARTITION = {0: 0, 1: 0, 2: 1}  # file -> output partition (all keyed by URL)


class Topic:
    """Builds a raw log (data records and markers) and the read_committed view of it."""

    def __init__(self) -> None:
        self.log: list[Entry] = []
        self.view: list[Out] = []
        self.ends: dict[int, int] = {}

    def _next(self, partition: int) -> int:
        offset = self.ends.get(partition, 0)
        self.ends[partition] = offset + 1
        return offset

    def txn(self, partition: int, pid: int, records: list[Out], fate: str = "commit",
            visible: bool | None = None) -> None:
        placed = []
        for r in records:
            placed.append(r._replace(partition=partition, offset=self._next(partition)))
            self.log.append(Entry(partition, placed[-1].offset, pid, True, None, placed[-1]))
        if fate != "open":
            self.log.append(Entry(partition, self._next(partition), pid, True, fate, None))
        if visible if visible is not None else fate == "commit":
            self.view.extend(placed)

    def stable(self, lso_lag: dict[int, int] | None = None) -> dict[int, tuple[int, int]]:
        lag = lso_lag or {}
        return {p: (end - lag.get(p, 0), end) for p, end in self.ends.items()}


def outputs(source: tuple[int, int], only: list[int] | None = None,
            value: bytes | None = None) -> list[Out]:
    want = INPUTS[source]
    assert want.items is not None and want.url is not None
    indexes = range(len(want.items)) if only is None else only
    return [Out.parse(0, 0, want.url.encode(), value or want.items[i], [
        ("source-topic", TOPIC.encode()), ("source-partition", str(source[0]).encode()),
        ("source-offset", str(source[1]).encode()), ("source-url", want.url.encode()),
        ("index", str(i).encode()), ("count", str(len(want.items)).encode())])
        for i in indexes]


def dead_letter(source: tuple[int, int], reason: str | None = None) -> list[Out]:
    want = INPUTS[source]
    value = orjson.dumps({"url": want.url, "reason": reason or want.dlq_reason, "error": "x",
                          "attempts": 1, "source": {"topic": TOPIC, "partition": source[0],
                                                    "offset": source[1]}})
    return [Out.parse(0, 0, None, value, [
        ("source-topic", TOPIC.encode()), ("source-partition", str(source[0]).encode()),
        ("source-offset", str(source[1]).encode())])]


def clean() -> tuple[Topic, Topic]:
    """Every input's one outcome, plus an aborted attempt before file 0's commit."""
    out, dlq = Topic(), Topic()
    out.txn(0, 7, outputs((0, 0)), fate="abort")
    out.txn(0, 7, outputs((0, 0)))
    out.txn(0, 7, outputs((0, 1)))
    out.txn(1, 8, outputs((1, 0)))
    dlq.txn(0, 8, dead_letter((1, 1)))
    return out, dlq


def judge(out: Topic, dlq: Topic, *, group: dict[int, int] | None = None,
          done_at: float | None = 50.0, out_ends: dict | None = None, require_aborts=True):
    return check(inputs=INPUTS, input_topic=TOPIC, outputs=out.view, dead_letters=dlq.view,
                 output_log=out.log, dlq_log=dlq.log,
                 group_offsets=group if group is not None else {0: 2, 1: 2},
                 input_ends={0: 2, 1: 2}, output_ends=out_ends or out.stable(),
                 dlq_ends=dlq.stable(), last_fault_at=10.0, done_at=done_at,
                 require_aborts=require_aborts)


def anomalies(verdict) -> dict[str, int]:
    kinds = ("duplicates", "lost", "altered", "unexpected_dlq", "uncommitted_inputs",
             "aborted_visible", "invisible_committed", "torn", "hanging", "order_violations")
    return {k: verdict.counts[k] for k in kinds if verdict.counts[k]}


def test_a_clean_run_passes_and_counts_the_aborted_attempt():
    verdict = judge(*clean())
    assert verdict.passed, verdict.failures
    assert anomalies(verdict) == {}
    c = verdict.counts
    assert (c["inputs"], c["outputs"], c["dead_letters"]) == (4, 6, 1)
    assert (c["aborted_attempts"], c["aborted_records"], c["uncommitted_only_records"]) == (1, 3, 3)
    assert verdict.recovery_s == 40.0


def test_a_transaction_committed_twice_is_duplicates():
    out, dlq = clean()
    out.txn(0, 9, outputs((0, 1)))  # e.g. a zombie nobody fenced commits file 1 again
    verdict = judge(out, dlq)
    assert not verdict.passed
    assert anomalies(verdict) == {"duplicates": 2}


def test_a_missing_transaction_is_lost_and_a_short_group_offset_is_uncommitted():
    out, dlq = Topic(), Topic()
    out.txn(0, 7, outputs((0, 0)))
    out.txn(1, 8, outputs((1, 0)))
    dlq.txn(0, 8, dead_letter((1, 1)))
    verdict = judge(out, dlq, group={0: 1, 1: 2}, require_aborts=False)
    assert anomalies(verdict) == {"lost": 2, "uncommitted_inputs": 1}
    assert verdict.counts["lost_inputs"] == 1


def test_a_missing_dead_letter_is_lost():
    out, dlq = clean()
    dlq.view.clear()
    dlq.log.clear()
    dlq.ends.clear()
    assert anomalies(judge(out, dlq)) == {"lost": 1}


def test_records_of_an_aborted_transaction_returned_by_read_committed_are_aborted_visible():
    out, dlq = Topic(), Topic()
    out.txn(0, 7, outputs((0, 0)), fate="abort", visible=True)  # a client that shows aborts
    out.txn(0, 7, outputs((0, 1)))
    out.txn(1, 8, outputs((1, 0)))
    dlq.txn(0, 8, dead_letter((1, 1)))
    verdict = judge(out, dlq)
    assert not verdict.passed
    assert verdict.counts["aborted_visible"] == 3
    assert verdict.counts["lost"] == 0  # they are there, but must not be


def test_a_torn_write_visible_before_its_retry_is_aborted_visible_and_duplicate():
    out, dlq = clean()
    out.txn(0, 9, outputs((0, 1), only=[0]), fate="abort", visible=True)
    verdict = judge(out, dlq)
    assert verdict.counts["aborted_visible"] == 1
    assert verdict.counts["duplicates"] == 1


def test_a_transaction_still_open_is_hanging():
    out, dlq = clean()
    out.txn(1, 9, outputs((1, 0)), fate="open", visible=False)
    verdict = judge(out, dlq, out_ends=out.stable({1: 1}))
    assert not verdict.passed
    assert anomalies(verdict) == {"hanging": 2}  # the open transaction, and LSO < HW
    assert verdict.counts["open_transactions"] == 1


def test_a_file_split_over_two_committed_transactions_is_torn():
    out, dlq = Topic(), Topic()
    out.txn(0, 7, outputs((0, 0), only=[0, 1]))
    out.txn(0, 7, outputs((0, 0), only=[2]))
    out.txn(0, 7, outputs((0, 1)))
    out.txn(1, 8, outputs((1, 0)))
    dlq.txn(0, 8, dead_letter((1, 1)))
    verdict = judge(out, dlq, require_aborts=False)
    assert anomalies(verdict) == {"torn": 2}


def test_two_whole_files_in_one_transaction_are_a_group_commit_not_torn():
    out, dlq = Topic(), Topic()
    out.txn(0, 7, outputs((0, 0)) + outputs((0, 1)))
    out.txn(1, 8, outputs((1, 0)))
    dlq.txn(0, 8, dead_letter((1, 1)))
    assert anomalies(judge(out, dlq, require_aborts=False)) == {}


def test_a_whole_file_and_part_of_another_in_one_transaction_is_torn():
    out, dlq = Topic(), Topic()
    out.txn(0, 7, outputs((0, 0)) + outputs((0, 1), only=[0]))
    out.txn(0, 7, outputs((0, 1), only=[1]))
    out.txn(1, 8, outputs((1, 0)))
    dlq.txn(0, 8, dead_letter((1, 1)))
    assert anomalies(judge(out, dlq, require_aborts=False)) == {"torn": 2}


def test_transactions_out_of_file_order_is_an_order_violation():
    out, dlq = Topic(), Topic()
    out.txn(0, 7, outputs((0, 0), only=[0, 2, 1]))
    out.txn(0, 7, outputs((0, 1)))
    out.txn(1, 8, outputs((1, 0)))
    dlq.txn(0, 8, dead_letter((1, 1)))
    verdict = judge(out, dlq, require_aborts=False)
    assert anomalies(verdict) == {"order_violations": 1}


def test_source_offsets_going_backwards_is_an_order_violation():
    out, dlq = Topic(), Topic()
    out.txn(0, 7, outputs((0, 1)))  # input offset 1 committed before offset 0
    out.txn(0, 7, outputs((0, 0)))
    out.txn(1, 8, outputs((1, 0)))
    dlq.txn(0, 8, dead_letter((1, 1)))
    verdict = judge(out, dlq, require_aborts=False)
    assert anomalies(verdict) == {"order_violations": 3}  # each of file 0's transactions
    assert verdict.counts["duplicates"] == 0


def test_a_duplicate_is_not_also_counted_as_disorder():
    out, dlq = clean()
    out.txn(0, 9, outputs((0, 0)))  # file 0 again, after file 1
    assert anomalies(judge(out, dlq)) == {"duplicates": 3}


def test_outputs_and_a_dead_letter_for_one_input_is_a_second_outcome():
    out, dlq = clean()
    dlq.txn(1, 9, dead_letter((0, 1), reason="http_transient"))
    verdict = judge(out, dlq)
    assert verdict.counts["double_outcome"] == 1
    assert verdict.counts["duplicates"] == 1
    assert verdict.counts["unexpected_dlq"] == 1
    assert not verdict.passed


def test_a_good_file_dead_lettered_instead_is_lost_and_unexpected():
    out, dlq = Topic(), Topic()
    out.txn(0, 7, outputs((0, 0)), fate="abort")
    out.txn(0, 7, outputs((0, 0)))
    out.txn(1, 8, outputs((1, 0)))
    dlq.txn(0, 7, dead_letter((0, 1), reason="http_transient"))
    dlq.txn(0, 8, dead_letter((1, 1)))
    assert anomalies(judge(out, dlq)) == {"lost": 2, "unexpected_dlq": 1}


def test_a_changed_payload_or_wrong_reason_is_altered():
    out, dlq = Topic(), Topic()
    out.txn(0, 7, outputs((0, 0)), fate="abort")
    out.txn(0, 7, outputs((0, 0), only=[0]) + outputs((0, 0), only=[1], value=b'{"seq":1.0}')
            + outputs((0, 0), only=[2]))
    out.txn(0, 7, outputs((0, 1)))
    out.txn(1, 8, outputs((1, 0)))
    dlq.txn(0, 8, dead_letter((1, 1), reason="not_an_object"))
    assert anomalies(judge(out, dlq)) == {"altered": 2}


def test_committed_records_missing_from_the_read_committed_view_are_invisible():
    out, dlq = clean()
    out.view = [r for r in out.view if (r.source, r.item_index) != ((1, 0), 0)]
    assert anomalies(judge(out, dlq)) == {"invisible_committed": 1, "lost": 1}


def test_liveness_fails_when_done_late_or_never():
    late = judge(*clean(), done_at=10.0 + 121)
    assert [f for f in late.failures if f.startswith("liveness")]
    never = judge(*clean(), done_at=None)
    assert [f for f in never.failures if f.startswith("liveness")]
    assert anomalies(late) == anomalies(never) == {}


def test_a_run_without_aborted_attempts_fails_unless_aborts_were_off():
    out, dlq = Topic(), Topic()
    out.txn(0, 7, outputs((0, 0)))
    out.txn(0, 7, outputs((0, 1)))
    out.txn(1, 8, outputs((1, 0)))
    dlq.txn(0, 8, dead_letter((1, 1)))
    assert not judge(out, dlq).passed
    assert judge(out, dlq, require_aborts=False).passed


@pytest.mark.parametrize("marker", ["commit", "abort"])
def test_fates_follow_each_producers_own_marker(marker):
    a, b = outputs((0, 0), only=[0]), outputs((0, 1), only=[0])
    log = [
        Entry(0, 0, 1, True, None, a[0]._replace(offset=0)),
        Entry(0, 1, 2, True, None, b[0]._replace(offset=1)),
        Entry(0, 2, 2, True, marker, None),    # producer 2's marker settles only its record
        Entry(0, 3, 3, False, None, b[0]._replace(offset=3)),
    ]
    fate, txns = fates(log)
    assert fate == {(0, 0): "open", (0, 1): marker, (0, 3): "plain"}
    assert sorted(t.fate for t in txns) == sorted(["open", marker, "plain"])
