"""A download counted against its memory reservation as it arrives, before it is kept
(app/files/budget.py has the bound; docs/design.md, "Memory", the rules)."""

from __future__ import annotations

from urllib.parse import urlsplit

from app.files.budget import Reservation
from app.files.parse_csv import is_csv

# Counted for each decoded byte while a file downloads and parses: the body, then its
# lines; and for each "{" (at least one per transaction) the objects its record will take.
BODY_COST = 2
OBJECT_COST = 600
# A CSV row's JSON repeats the field names that its header line spells once: counted per
# "\n" (at least one per row) on top of OBJECT_COST, as this many times the header line.
CSV_HEADER_COST = 3


class Meter:
    """Counts a download's decoded pieces against its reservation before they are kept,
    and learns the file's format (``csv``) from its URLs and Content-Type."""

    def __init__(self, reservation: Reservation, url: str) -> None:
        self.reservation = reservation
        self.cost = 0
        self.url = url
        self.csv = False
        self._row_mark, self._row_cost = b"{", OBJECT_COST

    def described(self, final_url: str, content_type: str | None) -> None:
        """A body starts (again, if the download started over: what came before is gone)."""
        self.cost = 0  # the reservation keeps what it holds; it grows again past that
        self.csv = is_csv(content_type, _path(self.url), _path(final_url))
        # A CSV row is sized by the first piece (its header line).
        self._row_mark, self._row_cost = (b"\n", -1) if self.csv else (b"{", OBJECT_COST)

    def count(self, piece: bytes) -> None:
        if self._row_cost < 0:
            header = piece.partition(b"\n")[0]
            self._row_cost = OBJECT_COST + CSV_HEADER_COST * (len(header) + 1)
        self.cost += BODY_COST * len(piece) + self._row_cost * piece.count(self._row_mark)
        self.reservation.grow_to(self.cost)


def _path(url: str) -> str:
    try:
        return urlsplit(url).path
    except ValueError:
        return ""
