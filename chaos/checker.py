"""The checker: records in, verdict and counts out. Pure: no I/O, no clock, no Kafka.

It judges two views of the output and dead-letter topics:

- the client's view: what a ``read_committed`` consumer returned (``outputs``,
  ``dead_letters``);
- the log itself, read uncommitted with its transaction markers (``output_log``,
  ``dlq_log``): every data record with its producer id, and every commit or abort
  marker. From it each record's fate follows: committed, aborted, or still open.

Verdicts (each can fail on its own; ``tests/chaos/test_checker.py`` makes each fail):

- exactly one outcome per input record: its complete set of transactions, each
  once and byte-equal to the source item, or exactly one dead letter with the
  expected reason (``duplicates``, ``lost``, ``altered``, ``unexpected_dlq``);
- nothing lost upstream: the group's committed offsets equal the input's end
  offsets (``uncommitted_inputs``);
- no aborted reads: nothing the read_committed view returned belongs to an
  aborted or unfinished transaction (``aborted_visible``), and nothing committed
  is missing from that view (``invisible_committed``);
- no torn transactions: every committed transaction holds whole outcomes only,
  each input record's complete set of outputs or its one dead letter; one input
  record per transaction, several with group commit (``torn``);
- no hanging transaction: last stable offset == high watermark everywhere, and no
  transaction left open in the log (``hanging``);
- order: within an output partition a file's transactions appear in file order,
  and for each source partition the source offsets never decrease
  (``order_violations``; judged on first copies, so a duplicate is counted once,
  as a duplicate);
- liveness: everything committed within ``liveness_s`` of the last fault;
- the run exercised aborts: some aborted attempts are in the log
  (``aborted_attempts`` > 0).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson

from chaos.txnlog import Entry, Out, Txn, fates

MAX_EXAMPLES = 10


class Want(Protocol):
    """What one input record must produce (chaos.workload.Expected is one)."""

    @property
    def url(self) -> str | None: ...
    @property
    def items(self) -> tuple[bytes, ...] | None: ...  # None: one dead letter instead
    @property
    def dlq_reason(self) -> str | None: ...


@dataclass
class Verdict:
    counts: dict[str, int]
    failures: list[str]
    examples: dict[str, list[str]]
    recovery_s: float | None = None

    @property
    def passed(self) -> bool:
        return not self.failures


class _Tally:
    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, list[str]] = collections.defaultdict(list)

    def add(self, kind: str, example: str | None = None, n: int = 1) -> None:
        self.counts[kind] += n
        if example is not None and len(self.examples[kind]) < MAX_EXAMPLES:
            self.examples[kind].append(example)


def check(*, inputs: Mapping[tuple[int, int], Want], input_topic: str,
          outputs: Sequence[Out], dead_letters: Sequence[Out],
          output_log: Sequence[Entry], dlq_log: Sequence[Entry],
          group_offsets: Mapping[int, int], input_ends: Mapping[int, int],
          output_ends: Mapping[int, tuple[int, int]], dlq_ends: Mapping[int, tuple[int, int]],
          last_fault_at: float | None = None, done_at: float | None = None,
          liveness_s: float = 120.0, require_aborts: bool = True) -> Verdict:
    """Judge one run. ``inputs`` maps each input record's (partition, offset) to what
    it must produce; ``*_ends`` map partitions to (last stable offset, high watermark);
    ``last_fault_at`` and ``done_at`` are seconds on one clock (None: never done)."""
    t = _Tally()
    _upstream(t, input_ends, group_offsets)
    _views(t, "output", outputs, output_log)
    _views(t, "dlq", dead_letters, dlq_log)
    _outcomes(t, inputs, input_topic, outputs, dead_letters)
    _order(t, outputs, dead_letters)
    _torn(t, inputs, output_log, dlq_log)
    _hanging(t, "output", output_ends)
    _hanging(t, "dlq", dlq_ends)

    c = t.counts
    c["inputs"] = len(inputs)
    c["outputs"] = len(outputs)
    c["dead_letters"] = len(dead_letters)
    c["expected_outputs"] = sum(len(w.items) for w in inputs.values() if w.items is not None)
    c["expected_dead_letters"] = sum(1 for w in inputs.values() if w.items is None)
    failures = []
    for kind, what in _FAILING.items():
        if c[kind]:
            failures.append(f"{kind}={c[kind]}: {what}")
    recovery = None
    if done_at is None:
        failures.append("liveness: the group never committed every input record")
    elif last_fault_at is not None:
        recovery = max(0.0, done_at - last_fault_at)
        if recovery > liveness_s:
            failures.append(f"liveness: done {recovery:.0f}s after the last fault "
                            f"(limit {liveness_s:.0f}s)")
    if require_aborts and not c["aborted_attempts"]:
        failures.append("aborted_attempts=0: no aborted transaction in the log, so the run "
                        "did not show that aborted work stays invisible")
    for kind in (*_FAILING, "aborted_attempts", "aborted_records", "uncommitted_only_records",
                 "lost_inputs", "double_outcome", "open_transactions"):
        c.setdefault(kind, 0)
    return Verdict(dict(c), failures, dict(t.examples), recovery)


_FAILING = {
    "duplicates": "records committed more than once (or a second outcome for one input)",
    "lost": "expected transactions or dead letters missing from the committed output",
    "altered": "committed records that differ from the source (payload, key, headers) or "
               "that no input record explains",
    "unexpected_dlq": "good files dead-lettered",
    "uncommitted_inputs": "input records past the group's committed offsets",
    "aborted_visible": "read_committed returned records of aborted or unfinished transactions",
    "invisible_committed": "committed records that read_committed did not return",
    "torn": "committed transactions holding part of an input record's outcome",
    "hanging": "partitions whose last stable offset is below the high watermark, or "
               "transactions left open in the log",
    "order_violations": "a file's transactions out of file order, or source offsets "
                        "going backwards within an output partition",
}


def _upstream(t: _Tally, input_ends: Mapping[int, int], group: Mapping[int, int]) -> None:
    for p, end in sorted(input_ends.items()):
        committed = group.get(p, 0)
        if committed != end:
            t.add("uncommitted_inputs", f"input partition {p}: group committed {committed}, "
                  f"end {end}", n=max(1, end - committed))


def _views(t: _Tally, topic: str, view: Sequence[Out], log: Sequence[Entry]) -> None:
    """Compare the read_committed view with the fates the raw log gives."""
    fate, txns = fates(log)
    raw = {(e.partition, e.offset): e.record for e in log if e.record is not None}
    seen = set()
    for r in view:
        where = (r.partition, r.offset)
        seen.add(where)
        f = fate.get(where)
        if f is None:
            t.add("altered", f"{topic} {where}: returned by read_committed, absent from the log")
        elif f not in ("commit", "plain"):
            t.add("aborted_visible", f"{topic} {where}: fate {f}, source {r.source} index "
                  f"{r.item_index}")
        else:
            rec = raw[where]
            if rec is not None and (rec.source, rec.item_index) != (r.source, r.item_index):
                t.add("altered", f"{topic} {where}: read_committed and the log disagree")
    for where, f in fate.items():
        if where not in seen:
            t.add("uncommitted_only_records")
            if f in ("commit", "plain"):
                t.add("invisible_committed", f"{topic} {where}: committed, not returned")
    for txn in txns:
        if txn.fate == "abort" and txn.records:
            t.add("aborted_attempts")
            t.add("aborted_records", n=len(txn.records))
        elif txn.fate == "open" and txn.records:
            r = txn.records[0]
            t.add("hanging", f"{topic} partition {txn.partition}: producer {txn.producer_id} "
                  f"left a transaction open from offset {r.offset}")
            t.add("open_transactions")


def _outcomes(t: _Tally, inputs: Mapping[tuple[int, int], Want], input_topic: str,
              outputs: Sequence[Out], dead_letters: Sequence[Out]) -> None:
    copies, touched = _output_copies(t, inputs, input_topic, outputs)
    letters = _dead_letter_copies(t, inputs, dead_letters)
    _missing_outcomes(t, inputs, copies, letters, touched)


def _output_copies(t: _Tally, inputs: Mapping[tuple[int, int], Want], input_topic: str,
                   outputs: Sequence[Out]
                   ) -> tuple[collections.Counter[tuple[int, int, int]], set[tuple[int, int]]]:
    """Copies of each (input, item) among the outputs, and the inputs that have any."""
    copies: collections.Counter[tuple[int, int, int]] = collections.Counter()
    touched: set[tuple[int, int]] = set()
    for r in outputs:
        want = inputs.get(r.source)
        if want is None:
            t.add("altered", f"output {r.partition}@{r.offset}: source {r.source} is no "
                  "input record")
            continue
        touched.add(r.source)
        if want.items is None:
            t.add("altered", f"output {r.partition}@{r.offset}: input {r.source} must be "
                  f"dead-lettered ({want.dlq_reason}), not written")
            continue
        if not 0 <= r.item_index < len(want.items):
            t.add("altered", f"output {r.partition}@{r.offset}: index {r.item_index} of "
                  f"{len(want.items)}")
            continue
        copies[(*r.source, r.item_index)] += 1
        problem = _differs(r, want, input_topic)
        if problem:
            t.add("altered", f"output {r.partition}@{r.offset} ({r.source} "
                  f"#{r.item_index}): {problem}")
    for (sp, so, index), n in copies.items():
        if n > 1:
            t.add("duplicates", f"input {sp}@{so} transaction {index}: {n} copies", n=n - 1)
    return copies, touched


def _dead_letter_copies(t: _Tally, inputs: Mapping[tuple[int, int], Want],
                        dead_letters: Sequence[Out]) -> collections.Counter[tuple[int, int]]:
    """Dead letters per input, each checked against what its input must produce."""
    letters: collections.Counter[tuple[int, int]] = collections.Counter()
    for r in dead_letters:
        source = _dlq_source(r)
        want = inputs.get(source)
        if want is None:
            t.add("altered", f"dead letter {r.partition}@{r.offset}: source {source} is no "
                  "input record")
            continue
        letters[source] += 1
        try:
            doc = orjson.loads(r.value)
            reason = doc.get("reason")
        except (orjson.JSONDecodeError, AttributeError):
            doc, reason = None, None
        if want.items is not None:
            t.add("unexpected_dlq", f"input {source[0]}@{source[1]} dead-lettered ({reason}) "
                  "though its file is good")
        elif doc is None or reason != want.dlq_reason or doc.get("url") != want.url:
            t.add("altered", f"dead letter {r.partition}@{r.offset}: reason {reason!r}, "
                  f"expected {want.dlq_reason!r}")
    for (sp, so), n in letters.items():
        if n > 1:
            t.add("duplicates", f"input {sp}@{so}: {n} dead letters", n=n - 1)
    return letters


def _missing_outcomes(t: _Tally, inputs: Mapping[tuple[int, int], Want],
                      copies: collections.Counter[tuple[int, int, int]],
                      letters: collections.Counter[tuple[int, int]],
                      touched: set[tuple[int, int]]) -> None:
    """Inputs whose outcome is missing in part, or who got both outputs and a dead letter."""
    for source, want in inputs.items():
        if want.items is None:
            if not letters[source]:
                t.add("lost", f"input {source[0]}@{source[1]}: no dead letter "
                      f"({want.dlq_reason})")
            continue
        missing = sum(1 for i in range(len(want.items)) if not copies[(*source, i)])
        if missing:
            t.add("lost", f"input {source[0]}@{source[1]}: {missing} of {len(want.items)} "
                  "transactions missing", n=missing)
            t.add("lost_inputs")
        if letters[source] and source in touched:
            t.add("duplicates", f"input {source[0]}@{source[1]}: outputs and a dead letter")
            t.add("double_outcome")


def _differs(r: Out, want: Want, input_topic: str) -> str | None:
    assert want.items is not None and want.url is not None
    if r.value != want.items[r.item_index]:
        return "payload differs from the source item"
    if r.key != want.url.encode():
        return "key is not the URL"
    if r.source_url != want.url:
        return "source-url header differs"
    if r.item_count != len(want.items):
        return f"count header {r.item_count}, file has {len(want.items)}"
    if r.source_topic != input_topic:
        return f"source-topic header {r.source_topic!r}"
    return None


def _dlq_source(r: Out) -> tuple[int, int]:
    if r.source_partition >= 0 and r.source_offset >= 0:
        return r.source
    try:  # headers missing: the value carries the source too
        src = orjson.loads(r.value)["source"]
        return int(src["partition"]), int(src["offset"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return -1, -1


def _order(t: _Tally, outputs: Sequence[Out], dead_letters: Sequence[Out]) -> None:
    """Judged on the first copy of each record, in log order within each partition."""
    first: set[tuple[int, int, int]] = set()
    last_index: dict[tuple[int, int, int], int] = {}     # (partition, sp, so) -> index
    last_source: dict[tuple[str, int, int], int] = {}    # (topic, partition, sp) -> so
    for topic, view in (("output", outputs), ("dlq", dead_letters)):
        for r in sorted(view, key=lambda r: (r.partition, r.offset)):
            sp, so = r.source if topic == "output" else _dlq_source(r)
            ident = (sp, so, r.item_index if topic == "output" else -1)
            if ident in first:
                continue
            first.add(ident)
            before = last_source.get((topic, r.partition, sp))
            if before is not None and so < before:
                t.add("order_violations", f"{topic} partition {r.partition} @{r.offset}: source "
                      f"{sp}@{so} after {sp}@{before}")
            else:
                last_source[(topic, r.partition, sp)] = so
            if topic == "output":
                prev = last_index.get((r.partition, sp, so))
                if prev is not None and r.item_index <= prev:
                    t.add("order_violations", f"output partition {r.partition} @{r.offset}: "
                          f"input {sp}@{so} transaction {r.item_index} after {prev}")
                else:
                    last_index[(r.partition, sp, so)] = r.item_index


def _torn(t: _Tally, inputs: Mapping[tuple[int, int], Want], output_log: Sequence[Entry],
          dlq_log: Sequence[Entry]) -> None:
    for topic, log in (("output", output_log), ("dlq", dlq_log)):
        for txn in fates(log)[1]:
            if txn.fate != "commit" or not txn.records:
                continue
            problem = _whole(topic, txn, inputs)
            if problem:
                r = txn.records[0]
                t.add("torn", f"{topic} partition {txn.partition} from @{r.offset}, producer "
                      f"{txn.producer_id}: {problem}")


def _whole(topic: str, txn: Txn, inputs: Mapping[tuple[int, int], Want]) -> str | None:
    """None if the transaction holds whole outcomes only: every input record in it has
    all of its transactions there (or its one dead letter). One input record per
    transaction, or several with group commit (TRANSACTION_MAX_RECORDS)."""
    by_source: dict[tuple[int, int], list[Out]] = collections.defaultdict(list)
    for r in txn.records:
        by_source[_dlq_source(r) if topic == "dlq" else r.source].append(r)
    for source, records in sorted(by_source.items()):
        if topic == "dlq":
            if len(records) != 1:
                return f"input {source[0]}@{source[1]}: {len(records)} dead letters"
            continue
        want = inputs.get(source)
        if want is None or want.items is None:
            continue  # reported as altered
        indexes = sorted(r.item_index for r in records)
        if indexes != list(range(len(want.items))):
            return (f"input {source[0]}@{source[1]}: holds {len(indexes)} of "
                    f"{len(want.items)} transactions")
    return None


def _hanging(t: _Tally, topic: str, ends: Mapping[int, tuple[int, int]]) -> None:
    for p, (stable, high) in sorted(ends.items()):
        if stable != high:
            t.add("hanging", f"{topic} partition {p}: last stable offset {stable} < high "
                  f"watermark {high}")
