"""``python -m app redrive``: dead letters back to the input topic, exactly once.

This module is the command line and the report, pure and unit-tested; the job (its
selection, options and tally) is app/redrive/job.py, and app/redrive/mover.py reads
the DLQ and moves records in transactions. See docs/redrive.md for the contract and
an example session.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NoReturn

from app.config import load_settings
from app.errors import ConfigError
from app.redaction import redact_url
from app.redrive.job import (
    DEFAULT_BATCH,
    DEFAULT_MAX_REDRIVES,
    Options,
    RedriveFailed,
    Selection,
    Tally,
    UsageError,
)
from app.redrive.record import DeadLetter

PROG = "python -m app redrive"
_JOB_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


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
    from app.redrive.mover import run  # aiokafka only when it runs

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
