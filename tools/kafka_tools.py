"""Kafka's own transaction tool (``kafka-transactions.sh``, TransactionsCommand), run
from the jars Maven resolves (org.apache.kafka:kafka-tools, the broker's version; see
tools/kafka/pom.xml), and its output parsed.

- ``list``: every transactional id the coordinators know, with its producer id and
  state (``Ongoing`` and the ``Prepare*`` states: a transaction still open);
- ``find-hanging --broker-id N``: transactions open on a partition of broker N that
  their coordinator no longer knows (Kafka's own meaning of "hanging"), searched with
  ``--max-transaction-timeout 0`` so that every open transaction is a candidate, not
  only those open longer than 15 minutes.

Both commands exist in Kafka 3.9.1 and 4.4.0 with the same output (tab-separated
columns under a header row). Standard library only, like tools/local_kafka.py.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from tools import local_kafka

ARTIFACT = "kafka-tools"
MAIN_CLASS = "org.apache.kafka.tools.TransactionsCommand"
OPEN_STATES = frozenset({"Ongoing", "PrepareCommit", "PrepareAbort", "PrepareEpochFence"})
LIST_COLUMNS = ("TransactionalId", "Coordinator", "ProducerId", "TransactionState")
HANGING_COLUMNS = ("Topic", "Partition", "ProducerId", "ProducerEpoch", "StartOffset",
                   "Duration(min)")
TIMEOUT_S = 120.0


class ToolOutputError(Exception):
    """The tool's output is not the table this module reads (another Kafka version?)."""


@dataclass(frozen=True)
class Listed:
    """One row of ``list``."""

    transactional_id: str
    coordinator: int
    producer_id: int
    state: str

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES


@dataclass(frozen=True)
class Hanging:
    """One row of ``find-hanging``."""

    topic: str
    partition: int
    producer_id: int
    producer_epoch: int
    start_offset: int
    duration_min: int


def table(text: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of the tool's table (a header row, then one row per line; cells
    tab-separated and space-padded), each as column -> value. Raise ToolOutputError
    when a column in ``columns`` is missing."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ToolOutputError("no header row in the tool's output")
    header = [cell.strip() for cell in lines[0].split("\t")]
    missing = [c for c in columns if c not in header]
    if missing:
        raise ToolOutputError(f"columns {missing} missing from the header {header}")
    rows = []
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.split("\t")]
        if len(cells) < len(header) - 1:  # a trailing tab may leave the last cell off
            raise ToolOutputError(f"a row with {len(cells)} cells under {len(header)} "
                                  f"columns: {line!r}")
        rows.append(dict(zip(header, cells, strict=False)))
    return rows


def parse_list(text: str) -> list[Listed]:
    try:
        return [Listed(r["TransactionalId"], int(r["Coordinator"]), int(r["ProducerId"]),
                       r["TransactionState"]) for r in table(text, LIST_COLUMNS)]
    except ValueError as exc:
        raise ToolOutputError(f"list: {exc}") from None


def parse_hanging(text: str) -> list[Hanging]:
    try:
        return [Hanging(r["Topic"], int(r["Partition"]), int(r["ProducerId"]),
                        int(r["ProducerEpoch"]), int(r["StartOffset"]),
                        int(r["Duration(min)"])) for r in table(text, HANGING_COLUMNS)]
    except ValueError as exc:
        raise ToolOutputError(f"find-hanging: {exc}") from None


def run(bootstrap: str, *args: str, version: str | None = None,
        timeout: float = TIMEOUT_S) -> str:
    """The tool's standard output for one command; RuntimeError with its error output
    if it fails."""
    jars = local_kafka.libs(version or local_kafka.kafka_version(), ARTIFACT)
    done = subprocess.run(
        ["java", "-Xmx256m", "-cp", f"{jars}/*", MAIN_CLASS, "--bootstrap-server", bootstrap,
         *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"kafka-transactions {' '.join(args)} exited {done.returncode}: "
                           f"{done.stderr.strip()[-1000:]}")
    return done.stdout


def list_transactions(bootstrap: str, version: str | None = None) -> list[Listed]:
    return parse_list(run(bootstrap, "list", version=version))


def find_hanging(bootstrap: str, broker_id: int, version: str | None = None) -> list[Hanging]:
    return parse_hanging(run(bootstrap, "find-hanging", "--broker-id", str(broker_id),
                             "--max-transaction-timeout", "0", version=version))
