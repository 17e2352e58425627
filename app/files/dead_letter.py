"""A dead letter, built to fit the record size limit. Pure: no I/O.

A dead letter copies what its input brought: the URL (in its value and the
``source-url`` header), the input value, the key, an error message. A hostile input
can make these big, and a dead letter the broker refuses would abort its transaction
again and again: the partition would never move. So a letter that would pass the
limit (MAX_RECORD_BYTES, what the service knows of the DLQ topic's max.message.bytes)
gives up what it must, in this order: the copy of the input value (re-drive falls back
to the URL), the ``source-url`` header (a copy of the URL), then the longest of the
error message, the URL and the key, cut by what is over, until it fits. The reason, the
attempts and the source are never cut. The value's ``truncated`` field names each field
cut or left out, with its size in bytes before (docs/redrive.md: what re-drive does
with such a letter).
"""

from __future__ import annotations

import orjson
from aiokafka.structs import ConsumerRecord

from app.errors import IngestError
from app.files.records import Headers, OutRecord
from app.redrive.record import carried_headers, input_field

ERROR_CHARS = 2000  # an error message is diagnosis, not data: its start is enough


class _Letter:
    """A dead letter's parts while they are cut to size."""

    def __init__(self, msg: ConsumerRecord, doc: dict, headers: Headers, limit: int) -> None:
        self.key, self.doc, self.headers, self.limit = msg.key, doc, headers, limit
        self.input_size = len(msg.value or b"")
        self.value = b""

    def excess(self) -> int:
        """Bytes over the limit (0 or less: it fits)."""
        self.value = orjson.dumps(self.doc)
        headers = sum(len(k) + len(v) for k, v in self.headers)
        return len(self.key or b"") + len(self.value) + headers - self.limit

    def mark(self, field: str, size: int) -> int:
        """Record that ``field`` of ``size`` bytes is cut; the excess with the mark."""
        self.doc.setdefault("truncated", {}).setdefault(field, size)
        return self.excess()

    def omit_input(self) -> None:
        if self.doc["input"].get("value") is not None:
            self.mark("input", self.input_size)
            self.doc["input"] = {"omitted": self.input_size}

    def drop_source_url(self) -> None:
        for i, (name, value) in enumerate(self.headers):
            if name == "source-url":
                self.mark(name, len(value))
                del self.headers[i]
                return

    def cut_longest(self) -> bool:
        """Cut the longest of the error, the URL and the key by the excess, so a short
        one is kept whole; False when nothing is left to cut."""
        error, url, key = self.doc["error"], self.doc["url"] or "", self.key or b""
        sizes = {"error": len(error.encode()), "url": len(url.encode()), "key": len(key)}
        field = max(sizes, key=sizes.__getitem__)
        if not sizes[field]:
            return False
        over = self.mark(field, sizes[field])
        # Each character is at least one byte in UTF-8 and in JSON: dropping ``over``
        # of them takes off at least ``over`` bytes.
        if field == "key":
            self.key = key[:max(0, len(key) - over)]
        else:
            text = error if field == "error" else url
            self.doc[field] = text[:max(0, len(text) - over)]
        return True


def dead_letter_record(topic: str, msg: ConsumerRecord, url: str | None, exc: IngestError,
                       attempts: int, source: Headers, limit: int) -> OutRecord:
    """The dead letter of ``msg``, at most ``limit`` bytes of key, value and headers (given
    ``source``, the source headers; README has the format)."""
    kept = input_field(msg.value)  # what re-drive sends back (docs/redrive.md)
    doc: dict[str, object] = {
        "url": url,
        "reason": exc.reason,
        "error": exc.message[:ERROR_CHARS],
        "attempts": attempts,
        "source": {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset},
        "input": kept,
    }
    if "omitted" in kept:  # too long to copy at all (app/redrive/record.py)
        doc["truncated"] = {"input": kept["omitted"]}
    letter = _Letter(msg, doc, source + carried_headers(msg.headers), limit)
    for whole in (letter.omit_input, letter.drop_source_url):
        if letter.excess() > 0:
            whole()
    while letter.excess() > 0 and letter.cut_longest():
        pass
    return OutRecord(topic, letter.key, letter.value, letter.headers)
