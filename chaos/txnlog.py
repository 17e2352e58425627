"""What the raw log of a topic says, for the checker (chaos/checker.py): its data
records with their headers parsed (:class:`Out`), its entries with the transaction
markers (:class:`Entry`), the transactions between markers (:class:`Txn`), and each
record's fate. Pure: no I/O."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple


class Out(NamedTuple):
    """A data record of the output or dead-letter topic, its headers parsed."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    source_topic: str | None
    source_partition: int   # -1: missing or malformed
    source_offset: int      # -1: missing or malformed
    source_url: str | None
    item_index: int         # the index header; -1: missing (dead letters have none)
    item_count: int         # the count header; -1: missing

    @classmethod
    def parse(cls, partition: int, offset: int, key: bytes | None, value: bytes | None,
              headers: Iterable[tuple[str, bytes]]) -> Out:
        h = dict(headers)
        url = h.get("source-url")
        topic = h.get("source-topic")
        # Interned: a file's URL repeats in each of its records (millions in the full tier).
        return cls(partition, offset, key, value or b"",
                   sys.intern(topic.decode(errors="replace")) if topic is not None else None,
                   _int(h.get("source-partition")), _int(h.get("source-offset")),
                   sys.intern(url.decode(errors="replace")) if url is not None else None,
                   _int(h.get("index")), _int(h.get("count")))

    @property
    def source(self) -> tuple[int, int]:
        return self.source_partition, self.source_offset


def _int(raw: bytes | None) -> int:
    try:
        return int(raw) if raw is not None else -1
    except ValueError:
        return -1


class Entry(NamedTuple):
    """One record of the raw log: a data record or a transaction marker."""

    partition: int
    offset: int
    producer_id: int
    transactional: bool
    control: str | None   # "commit" or "abort" for a marker; None for data
    record: Out | None    # the data record (None for a marker)


@dataclass
class Txn:
    """The data one producer wrote to one partition between two markers."""

    partition: int
    producer_id: int
    fate: str             # "commit", "abort", "open" (no marker yet) or "plain"
    records: list[Out] = field(default_factory=list)


def fates(log: Iterable[Entry]) -> tuple[dict[tuple[int, int], str], list[Txn]]:
    """Each data record's fate by (partition, offset), and the transactions.

    A transactional record's fate is decided by the next marker of its producer
    in the same partition; without one it is still open. Non-transactional
    records are visible at once ("plain").
    """
    fate: dict[tuple[int, int], str] = {}
    txns: list[Txn] = []
    open_: dict[tuple[int, int], Txn] = {}
    for e in sorted(log, key=lambda e: (e.partition, e.offset)):
        if e.control is not None:
            txn = open_.pop((e.partition, e.producer_id), None)
            if txn is not None:
                txn.fate = e.control
                for r in txn.records:
                    fate[r.partition, r.offset] = e.control
                txns.append(txn)
            continue
        assert e.record is not None
        if not e.transactional:
            fate[e.partition, e.offset] = "plain"
            txns.append(Txn(e.partition, e.producer_id, "plain", [e.record]))
            continue
        txn = open_.setdefault((e.partition, e.producer_id),
                               Txn(e.partition, e.producer_id, "open"))
        txn.records.append(e.record)
        fate[e.partition, e.offset] = "open"
    txns.extend(open_.values())
    return fate, txns
