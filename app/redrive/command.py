"""``python -m app redrive``: dead letters back to the input topic, exactly once.

This module is the command line and the selection rules, pure and unit-tested;
app/redrive/mover.py reads the DLQ and moves records in transactions. See
docs/redrive.md for the contract and an example session.

A re-drive *job* is its selection (reasons, times, partitions, offsets) or the name
given with ``--job``. Its consumer group and transactional id are derived from it, so
running the same command again resumes where the job got to (after a kill, too) and
never moves a dead letter twice; a different selection is a different job.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import hashlib
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NoReturn

import orjson

from app.config import Settings, load_settings
from app.errors import ConfigError
from app.redaction import redact_url
from app.redrive.record import DeadLetter

PROG = "python -m app redrive"
DEFAULT_MAX_REDRIVES = 3
DEFAULT_BATCH = 200
_JOB_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


class UsageError(Exception):
    """A bad argument: exit 2 with one line."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a job considers; empty/None means no limit."""

    reasons: frozenset[str] = frozenset()
    since_ms: int | None = None     # DLQ record time, inclusive
    until_ms: int | None = None     # exclusive
    partitions: frozenset[int] = frozenset()
    from_offset: int | None = None  # inclusive, on the single selected partition
    to_offset: int | None = None    # inclusive

    def selects(self, letter: DeadLetter) -> bool:
        return ((not self.reasons or letter.reason in self.reasons)
                and (self.since_ms is None or letter.timestamp_ms >= self.since_ms)
                and (self.until_ms is None or letter.timestamp_ms < self.until_ms)
                and (not self.partitions or letter.partition in self.partitions)
                and (self.from_offset is None or letter.offset >= self.from_offset)
                and (self.to_offset is None or letter.offset <= self.to_offset))

    def fingerprint(self) -> str:
        canonical = orjson.dumps({
            "reasons": sorted(self.reasons), "since": self.since_ms, "until": self.until_ms,
            "partitions": sorted(self.partitions), "from": self.from_offset,
            "to": self.to_offset})
        return "sel-" + hashlib.sha256(canonical).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Options:
    selection: Selection
    job: str
    dry_run: bool = False
    max_redrives: int = DEFAULT_MAX_REDRIVES
    batch: int = DEFAULT_BATCH          # DLQ records read per transaction
    halt_in_transaction: int = 0        # TESTING AID: hang inside the n-th transaction

    def group_id(self, settings: Settings) -> str:
        return f"{settings.group_id}-redrive-{self.job}"

    def transactional_id(self, settings: Settings) -> str:
        return f"{settings.transactional_id_prefix}-redrive-{self.job}"


class Verdict(enum.Enum):
    MOVE = "move"
    PARK = "park"                  # re-driven max_redrives times already
    UNRECOVERABLE = "unrecoverable"  # the dead letter kept neither input value nor URL
    SKIP = "skip"                  # not selected


def judge(letter: DeadLetter, selection: Selection, max_redrives: int) -> Verdict:
    if not selection.selects(letter):
        return Verdict.SKIP
    if not letter.rebuildable:
        return Verdict.UNRECOVERABLE
    if letter.redrives >= max_redrives:
        return Verdict.PARK
    return Verdict.MOVE


@dataclass
class Tally:
    """What a run saw and did; ``moved`` only counts committed transactions."""

    read: int = 0
    selected: Counter[str] = field(default_factory=Counter)   # by reason, MOVE verdicts
    moved: Counter[str] = field(default_factory=Counter)
    parked: list[DeadLetter] = field(default_factory=list)
    unrecoverable: list[DeadLetter] = field(default_factory=list)
    skipped: int = 0

    def count(self, letter: DeadLetter, verdict: Verdict) -> None:
        self.read += 1
        if verdict is Verdict.MOVE:
            self.selected[letter.reason] += 1
        elif verdict is Verdict.PARK:
            self.parked.append(letter)
        elif verdict is Verdict.UNRECOVERABLE:
            self.unrecoverable.append(letter)
        else:
            self.skipped += 1

    def confirm(self, moved: Sequence[DeadLetter]) -> None:
        self.moved.update(letter.reason for letter in moved)


# -- arguments --------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG, description="Publish selected dead letters' input records back to "
        "INPUT_TOPIC, exactly once. The service's flags and environment variables (KAFKA_*, "
        "INPUT_TOPIC, DLQ_TOPIC, GROUP_ID, ...; see python -m app --help) set the connection "
        "and topics.")
    p.add_argument("--reason", action="append", default=[], metavar="CODE",
                   help="only these reasons (repeat, or comma-separated)")
    p.add_argument("--since", metavar="TIME", help="DLQ record time >= TIME (ISO 8601; UTC "
                   "if no zone), e.g. 2026-11-29T10:00:00Z")
    p.add_argument("--until", metavar="TIME", help="DLQ record time < TIME")
    p.add_argument("--partition", action="append", default=[], metavar="N",
                   help="only these DLQ partitions (repeat, or comma-separated)")
    p.add_argument("--from-offset", metavar="N", help="first DLQ offset (needs one --partition)")
    p.add_argument("--to-offset", metavar="N", help="last DLQ offset, inclusive")
    p.add_argument("--dry-run", action="store_true",
                   help="count what would move, by reason; move nothing")
    p.add_argument("--max-redrives", metavar="N", default=str(DEFAULT_MAX_REDRIVES),
                   help="park (list, don't send) dead letters whose input was re-driven N "
                   f"times already [default: {DEFAULT_MAX_REDRIVES}]")
    p.add_argument("--job", metavar="NAME", help="name the job (default: from the selection); "
                   "the same job resumes where it stopped")
    p.add_argument("--batch", metavar="N", default=str(DEFAULT_BATCH),
                   help=f"DLQ records per transaction [default: {DEFAULT_BATCH}]")
    p.add_argument("--test-halt-in-transaction", metavar="N", default="0", help=argparse.SUPPRESS)
    return p


def parse_args(argv: Sequence[str]) -> tuple[Options, list[str]]:
    """The re-drive options, and the arguments left for the service's settings."""
    args, rest = _parser().parse_known_args(list(argv))
    partitions = frozenset(_number(p, "--partition") for p in _split(args.partition))
    selection = Selection(
        reasons=frozenset(_split(args.reason)),
        since_ms=_time(args.since, "--since"), until_ms=_time(args.until, "--until"),
        partitions=partitions,
        from_offset=_optional(args.from_offset, "--from-offset"),
        to_offset=_optional(args.to_offset, "--to-offset"))
    _check(selection)
    if args.job is not None and not _JOB_NAME.fullmatch(args.job):
        raise UsageError(f"--job {args.job!r}: use letters, digits, '.', '_' or '-'")
    options = Options(
        selection=selection, job=args.job or selection.fingerprint(), dry_run=args.dry_run,
        max_redrives=_number(args.max_redrives, "--max-redrives", least=1),
        batch=_number(args.batch, "--batch", least=1),
        halt_in_transaction=_number(args.test_halt_in_transaction, "--test-halt-in-transaction"))
    return options, rest


def _check(s: Selection) -> None:
    if s.since_ms is not None and s.until_ms is not None and s.since_ms >= s.until_ms:
        raise UsageError("--since must be earlier than --until")
    if (s.from_offset is not None or s.to_offset is not None) and len(s.partitions) != 1:
        raise UsageError("--from-offset/--to-offset need exactly one --partition")
    if s.from_offset is not None and s.to_offset is not None and s.from_offset > s.to_offset:
        raise UsageError("--from-offset must not be after --to-offset")


def _split(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _optional(text: str | None, flag: str) -> int | None:
    return None if text is None else _number(text, flag)


def _number(text: str, flag: str, least: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise UsageError(f"{flag} {text!r}: must be a whole number >= {least}")
    return value


def _time(text: str | None, flag: str) -> int | None:
    """Milliseconds since the epoch from ISO 8601; a time without a zone is UTC."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{flag} {text!r}: not an ISO 8601 time, "
                         "e.g. 2026-11-29T10:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


# -- reports ------------------------------------------------------------------------------

def describe(letter: DeadLetter, dlq_topic: str) -> str:
    """One line per listed dead letter; the URL without secrets."""
    url = redact_url(letter.url) if letter.url else "-"
    cut = f"  truncated={','.join(letter.truncated)}" if letter.truncated else ""
    return (f"  {dlq_topic}:{letter.partition}:{letter.offset}  {letter.reason}  "
            f"redrives={letter.redrives}  url={url}{cut}")


def report(tally: Tally, options: Options, dlq_topic: str) -> list[str]:
    """What the run prints on stdout: the letters it did not send, then one summary line."""
    lines = []
    if tally.parked:
        lines.append(f"parked (input re-driven {options.max_redrives}+ times already, "
                     f"not sent): {len(tally.parked)}")
        lines += [describe(letter, dlq_topic) for letter in tally.parked]
    if tally.unrecoverable:
        lines.append(f"cannot re-drive (the dead letter kept no whole input value or URL, "
                     f"or its key was truncated): "
                     f"{len(tally.unrecoverable)}")
        lines += [describe(letter, dlq_topic) for letter in tally.unrecoverable]
    lines.append(summary(tally, options))
    return lines


def summary(tally: Tally, options: Options) -> str:
    counts = tally.selected if options.dry_run else tally.moved
    by_reason = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))
    verb = "would move" if options.dry_run else "moved"
    moved = f"{verb} {sum(counts.values())}" + (f" ({by_reason})" if by_reason else "")
    if not options.dry_run and sum(counts.values()) != sum(tally.selected.values()):
        moved += f" of {sum(tally.selected.values())} selected"
    return (f"redrive job {options.job}{' (dry run)' if options.dry_run else ''}: {moved}; "
            f"parked {len(tally.parked)}; cannot re-drive {len(tally.unrecoverable)}; "
            f"not selected {tally.skipped}; {tally.read} dead letters read")


# -- entry point --------------------------------------------------------------------------

def main(argv: Sequence[str]) -> int:
    """Exit 0: done; 1: a failure (run the same command again to resume); 2: bad arguments."""
    from app.redrive.mover import RedriveFailed, run  # aiokafka only when it runs

    try:
        options, rest = parse_args(argv)
        settings = load_settings(rest, os.environ)
    except (UsageError, ConfigError) as exc:
        print(f"txingest redrive: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="txingest redrive: %(levelname)s %(name)s: %(message)s")
    tally = Tally()
    code = 0
    try:
        asyncio.run(run(settings, options, tally, progress=sys.stderr.isatty()))
    except UsageError as exc:
        print(f"txingest redrive: {exc}", file=sys.stderr)
        return 2
    except RedriveFailed as exc:
        print(f"txingest redrive: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:  # a second Ctrl-C, or one before moving began
        print("txingest redrive: interrupted; run the same command again to resume",
              file=sys.stderr)
        code = 1
    print("\n".join(report(tally, options, settings.dlq_topic)), flush=True)
    return code
