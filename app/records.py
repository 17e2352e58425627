"""What a prepared input record becomes: the records to write, and the bytes they hold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from app.budget import UNCOUNTED, Reservation

Headers = list[tuple[str, bytes]]


class OutRecord(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes  # None only in a changelog tombstone
    headers: Headers
    partition: int | None = None  # None: the default partitioner's pick for the key


@dataclass(frozen=True, slots=True)
class Prepared:
    """An input record's outputs (or its one dead letter), holding ``claim`` on the memory
    budget until its owner calls ``release``."""

    records: list[OutRecord]
    attempts: int
    claim: Reservation = UNCOUNTED
    dedup_key: bytes | None = None  # what makes a later record a repeat of this one
    skipped: bool = False  # not downloaded: its key was already committed when it came
    reason: str | None = None  # a dead letter's reason code; None for outputs

    @property
    def dead_lettered(self) -> bool:
        return self.reason is not None

    @property
    def nbytes(self) -> int:
        return self.claim.held

    def release(self) -> None:
        self.claim.release()
