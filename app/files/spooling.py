"""The preparer's part for files bigger than SPOOL_THRESHOLD_BYTES: where a download's
body goes (memory, then the spool), what stops a download and what it waits for, and
a spooled file's outputs (validated whole, then parsed again inside its transaction).
The spool itself is app/files/spool.py; reading it back, app/files/streamed.py."""

from __future__ import annotations

import dataclasses
import logging

from app.config import Settings
from app.dedup.store import DIGEST_BYTES
from app.errors import PoisonError
from app.files.budget import UNCOUNTED, NoRoom, Reservation
from app.files.meter import Meter
from app.files.records import Headers, Output, Prepared, StreamedOutputs
from app.files.sink import BodySink
from app.files.spool import Spool, SpoolFile, SpoolFull
from app.files.streamed import SpoolReader, streaming_cost, validate
from app.ops.stats import Stats
from app.redaction import redact_url

log = logging.getLogger(__name__)
# What a download straight to the spool is admitted with: streaming it, with the usual
# 100-200 bytes a transaction (settled to the file's own figure once it is validated).
SPOOLED_ADMISSION_BYTES = streaming_cost(150, 1)


class Spooling:
    def __init__(self, settings: Settings, spool: Spool | None, stats: Stats) -> None:
        self.settings, self.spool, self.stats = settings, spool, stats
        # The body's hash: DEDUP=content's key, and a chunked file's identity.
        self._digest = settings.dedup == "content" or settings.file_chunk_records > 0

    def sink(self, meter: Meter, reservation: Reservation, name: str,
             spool_now: bool) -> BodySink | None:
        """Where the download's pieces go; None: memory only (no spool, or a record
        outside the budget, whose spool file nothing would remove)."""
        if self.spool is None or reservation is UNCOUNTED:
            return None
        return BodySink(meter, self.spool, self.settings.spool_threshold_bytes, name,
                        lambda: reservation.head, self._digest, spool_now)

    async def make_room(self, stop: Exception, meter: Meter, reservation: Reservation,
                        sink: BodySink | None) -> tuple[int, bool]:
        """Wait for what stopped a download (NoRoom, SpoolFull, SpoolLater); what to admit
        it with next, and whether it goes straight to the spool."""
        if sink is not None:
            sink.discard()
        reservation.settle(0)
        if isinstance(stop, NoRoom):
            self.stats.retried("memory_budget")
            return 2 * meter.cost, False
        if isinstance(stop, SpoolFull) and self.spool is not None:
            self.stats.retried("spool_full")
            log.info("spool full: waiting for %d bytes of room", stop.need,
                     extra={"event": "spool_wait", "url": redact_url(meter.url)})
            await self.spool.wait_for_room(stop.need)
        else:
            await reservation.until_head()
        return SPOOLED_ADMISSION_BYTES, True

    async def outputs(self, spooled: SpoolFile, url: str, csv: bool, base: Headers,
                      prepared: Prepared, limit: int) -> Prepared:
        """``prepared`` with a spooled file's outputs: validated whole (its count, its
        biggest record against ``limit``), then held as the spool file."""
        settings, reservation = self.settings, prepared.claim
        reader = SpoolReader(spooled.path, url, csv, settings.max_transactions_per_file,
                             settings.output_key_field, settings.csv_columns,
                             settings.spool_threshold_bytes)
        try:
            count, (biggest, index) = await validate(reader)
            total = ("count", str(count).encode())
            size = biggest + sum(len(k) + len(v) for k, v in [*base, ("index", b""), total])
            if size > limit:
                raise PoisonError("record_too_large", f"transaction {index} makes a record "
                                  f"of {size} bytes; MAX_RECORD_BYTES is "
                                  f"{settings.max_record_bytes}")
        except BaseException:
            spooled.remove()
            raise
        # DEDUP=content: the key app/dedup/store.py's content_key makes of a body in memory.
        key = (spooled.digest()[:DIGEST_BYTES] if settings.dedup == "content"
               else prepared.dedup_key)
        reservation.settle(streaming_cost(spooled.size, count))
        reservation.on_release = spooled.remove
        log.info("spooled: %d bytes, %d transactions", spooled.size, count, extra={
            "event": "spooled", "url": redact_url(url), "transactions": count})
        if not count:
            spooled.remove()
        identity = spooled.digest().hex() if self._digest else ""
        records: list[Output] = [StreamedOutputs(settings.output_topic, base, count,
                                                 reader.slices, identity=identity)
                                 ] if count else []
        return dataclasses.replace(prepared, records=records, dedup_key=key)
