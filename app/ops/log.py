"""Logging: one JSON object per line (default) or plain text, on stdout.

Context such as partition, offset, url and transactional_id goes in ``extra=``
and becomes fields of the JSON object.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from aiokafka.producer.sender import Sender

_PRODUCE_TASK = Sender._send_produce_req.__code__
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD)
        base = f"{self.formatTime(record)} {record.levelname:<7} {record.getMessage()}"
        text = f"{base} {extra}" if extra else base
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(client_errors)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka is chatty at INFO about every rebalance step and coordinator lookup.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))


def loop_exceptions(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: asyncio's, except for the Kafka client's leftovers.

    When a producer's sender dies (fenced, or a fatal error such as a lost coordinator
    connection), aiokafka 0.14 leaves failures behind that nothing awaits any more:
    futures it failed (a queued batch's drain waiter, the transaction waiter) and
    produce tasks still running (one may fail on a batch the sender's failure already
    dropped). asyncio logged each at error level with a traceback when it was freed.
    The task already reported the failure (events ``fenced``, ``task_failed``) through
    the futures it awaits, so these are debug lines. Our own futures are all awaited: a
    Kafka error in one nobody awaited is the client's."""
    if _kafka_clients_leftover(context):
        logging.getLogger("aiokafka").debug("a Kafka client failure nobody awaits: %r",
                                            context.get("exception"))
        return
    loop.default_exception_handler(context)


def _kafka_clients_leftover(context: dict[str, Any]) -> bool:
    message = context.get("message")
    if message == "Future exception was never retrieved":
        return isinstance(context.get("exception"), KafkaError)
    if message == "Task exception was never retrieved":
        # A running sender awaits each of its produce tasks: one nobody awaited
        # outlived its sender.
        task = context.get("future")
        coro = task.get_coro() if isinstance(task, asyncio.Task) else None
        return getattr(coro, "cr_code", None) is _PRODUCE_TASK
    return False


class ClientErrors(logging.Filter):
    """Turns a burst of aiokafka warnings and errors into a few clear lines.

    While Kafka is unreachable aiokafka logs tens of lines a second. The first one
    of a burst becomes one WARNING of ours (event ``kafka_errors``); the rest are
    counted, summarised once a minute, and a line says when they stopped (event
    ``kafka_recovered``, from ``tick``, which the service calls every second).
    """

    def __init__(self, quiet_s: float = 10.0, summary_every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.quiet_s, self.summary_every_s, self._clock = quiet_s, summary_every_s, clock
        self.since: float | None = None  # when the current burst began
        self.suppressed = 0
        self.total = 0  # every aiokafka warning or error seen, shown or not
        self._last_seen = self._last_summary = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka") or record.levelno < logging.WARNING:
            return True
        now = self._last_seen = self._clock()
        self.total += 1
        if self.since is None:
            self.since = self._last_summary = now
            _log.warning("Kafka client errors: %s; retrying, repeats summarised every %.0fs",
                         record.getMessage(), self.summary_every_s,
                         extra={"event": "kafka_errors"})
            return False
        self.suppressed += 1
        if now - self._last_summary >= self.summary_every_s:
            self._last_summary = now
            _log.warning("Kafka client errors continue after %.0fs: %d repeats, latest: %s",
                         now - self.since, self.suppressed, record.getMessage(),
                         extra={"event": "kafka_errors"})
        return False

    def tick(self) -> None:
        if self.since is not None and self._clock() - self._last_seen >= self.quiet_s:
            _log.warning("Kafka client errors stopped after %.0fs (%d repeats not shown)",
                         self._last_seen - self.since, self.suppressed,
                         extra={"event": "kafka_recovered"})
            self.since, self.suppressed = None, 0


_log = logging.getLogger("app.kafka")
client_errors = ClientErrors()
