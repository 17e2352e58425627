"""What a prepared input record becomes: the records to write, and the bytes they hold."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from app.files.budget import UNCOUNTED, Reservation

Headers = list[tuple[str, bytes]]


class OutRecord(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes  # None only in a changelog tombstone
    headers: Headers
    partition: int | None = None  # None: the default partitioner's pick for the key


class FileOutputs:
    """A file's output records, held compactly: one value per transaction, and what they
    all share (topic, key, the source headers and the count). app/kafka/committer.py appends them
    straight into record batches; iterating gives each as an OutRecord.

    Each record's headers are ``[*shared, ("index", "<n>"), count]``."""

    __slots__ = ("topic", "key", "values", "shared", "count")

    def __init__(self, topic: str, key: bytes, values: list[bytes], shared: Headers,
                 count: tuple[str, bytes]) -> None:
        self.topic, self.key, self.values = topic, key, values
        self.shared, self.count = shared, count

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[OutRecord]:
        for header, value in zip(index_headers(len(self.values)), self.values, strict=True):
            yield OutRecord(self.topic, self.key, value, [*self.shared, header, self.count])


class StreamedOutputs:
    """A spooled file's output records, parsed from its spool file slice by slice while
    they are sent (app/kafka/batches.py), again at every attempt: never all in memory.

    ``slices()`` yields each slice's keys (one key for them all, as bytes, or one each)
    and values; each record's headers are FileOutputs'. A chunk of the file
    (app/task/chunks.py) is one too: its slices begin at transaction ``start``, and it
    holds ``size`` of the file's ``total``. ``identity``: the body's SHA-256 (hex), when
    it was taken."""

    __slots__ = ("topic", "shared", "count", "total", "slices", "start", "size", "identity")

    def __init__(self, topic: str, shared: Headers, total: int,
                 slices: Callable[[], AsyncIterator[tuple[bytes | list[bytes], list[bytes]]]],
                 start: int = 0, size: int | None = None, identity: str = "") -> None:
        self.topic, self.shared, self.total, self.slices = topic, shared, total, slices
        self.count = ("count", str(total).encode())
        self.start, self.identity = start, identity
        self.size = total if size is None else size

    def __len__(self) -> int:
        return self.size


Output = OutRecord | FileOutputs | StreamedOutputs

_INDEX_CACHED = 65536  # ("index", b"<n>") headers shared by every file, for n below this
_index_cache: list[tuple[str, bytes]] = []


def index_headers(count: int) -> list[tuple[str, bytes]]:
    """The ``index`` headers 0 .. count - 1; the first _INDEX_CACHED are made once."""
    if len(_index_cache) < min(count, _INDEX_CACHED):
        _index_cache.extend(("index", str(n).encode())
                            for n in range(len(_index_cache), min(count, _INDEX_CACHED)))
    if count <= _INDEX_CACHED:
        return _index_cache[:count]
    return _index_cache + [("index", str(n).encode()) for n in range(_INDEX_CACHED, count)]


def index_range(start: int, stop: int) -> list[tuple[str, bytes]]:
    """The ``index`` headers start .. stop - 1 (cached ones shared)."""
    if stop <= _INDEX_CACHED:
        return index_headers(stop)[start:]
    return [("index", str(n).encode()) for n in range(start, stop)]


@dataclass(frozen=True, slots=True)
class Prepared:
    """An input record's outputs (or its one dead letter), holding ``claim`` on the memory
    budget until its owner calls ``release``."""

    records: list[Output]
    attempts: int
    claim: Reservation = UNCOUNTED
    dedup_key: bytes | None = None  # what makes a later record a repeat of this one
    skipped: bool = False  # not downloaded: its key was already committed when it came
    reason: str | None = None  # a dead letter's reason code; None for outputs

    @property
    def dead_lettered(self) -> bool:
        return self.reason is not None

    @property
    def count(self) -> int:
        """How many records it writes."""
        return sum(1 if type(r) is OutRecord else len(r) for r in self.records)

    def each_record(self) -> Iterator[OutRecord]:
        for r in self.records:
            if isinstance(r, FileOutputs):
                yield from r
            elif isinstance(r, OutRecord):
                yield r
            else:  # parsed only inside its transaction
                raise TypeError("a spooled file's records exist only while they are sent")

    @property
    def nbytes(self) -> int:
        return self.claim.held

    def release(self) -> None:
        self.claim.release()
