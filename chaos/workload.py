"""The workload: deterministic transaction files (chaos/faultyserver.py serves them
with their transient faults).

Everything about file ``n`` follows from ``(seed, n)``: its format, its
transactions (compact JSON, byte-equal to what the service writes), whether it is
poison (and which dead-letter reason it must get), how its input record spells the
URL, and which faults its first requests get. So the checker can rebuild what each
input record must produce from the record alone, and a run can be repeated.

Faults are transient by construction: each file fails at most ``MAX_FILE_FAULTS``
requests in a row (then it is served), plus server-wide 5xx bursts of a few
seconds, so with the service's ``MAX_ATTEMPTS`` (set high by the runner) every
good file eventually succeeds. Poison files are known up front.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import random
import re
from dataclasses import dataclass

import orjson

from chaos import workload_csv
from chaos.workload_csv import CSV_FORMATS

FORMATS = ("ndjson", "array", "gzip-file", "gzip-encoding", "csv", "csv-gzip")
EXTENSIONS = {"ndjson": ".ndjson", "array": ".json", "gzip-file": ".ndjson.gz",
              "gzip-encoding": ".ndjson", "csv": ".csv", "csv-gzip": ".csv.gz"}
# Poison kinds and the dead-letter reason each must get.
POISON = {
    "invalid_json": "invalid_json",
    "not_an_object": "not_an_object",
    "http_404": "http_error",
    "bad_gzip": "bad_gzip",
    "bad_input": "invalid_input_record",
    "bad_csv": "invalid_csv",
}
# Per-request faults; "stall" answers only after the client's read timeout.
FAULTS = ("503", "500", "502", "429", "reset", "truncated", "stall")
FAULT_WEIGHTS = (3, 2, 1, 1, 3, 3, 1)
MAX_FILE_FAULTS = 3
MAX_ITEMS = 50
# A JSON array stays below the tiers' SPOOL_THRESHOLD_BYTES (harness.SPOOL_THRESHOLD_BYTES):
# one above it is dead-lettered (array_too_large), while NDJSON and CSV files spool.
MAX_ARRAY_ITEMS = 8
_MEMOS = ("coffee", "naïve café ✓", "日本 送金", 'quote " and \\ backslash', "tab\there",
          "emoji 🙂", "rent", "")
_FILE_NUMBER = re.compile(rb"/f/(\d+)\.")
_BAD_INPUT = re.compile(rb"^not a url: file (\d+)$")


@dataclass(frozen=True, slots=True)
class FileSpec:
    n: int
    fmt: str
    count: int                 # transactions in the file (0 for poison)
    poison: str | None         # a key of POISON, known up front
    spelling: str              # how the input record carries the URL: text, json or object
    faults: tuple[str, ...]    # what this file's first requests get
    delay: float               # every good answer waits this long (a slow server)
    exact_numbers: bool        # items carry numbers only a Fragment keeps exact

    @property
    def path(self) -> str:
        return f"f/{self.n}{EXTENSIONS[self.fmt]}"

    @property
    def dlq_reason(self) -> str | None:
        return POISON[self.poison] if self.poison else None


@dataclass(frozen=True, slots=True)
class Expected:
    """What one input record must produce: its transactions, or one dead letter."""

    n: int
    url: str | None
    items: tuple[bytes, ...] | None   # None: the record must be dead-lettered
    dlq_reason: str | None


class Workload:
    def __init__(self, seed: int, poison_rate: float = 0.01, fault_rate: float = 0.3,
                 delay_rate: float = 0.15, exact_rate: float = 0.1) -> None:
        self.seed = seed
        self.poison_rate = poison_rate
        self.fault_rate = fault_rate
        self.delay_rate = delay_rate
        self.exact_rate = exact_rate

    @functools.lru_cache(maxsize=8192)  # noqa: B019 - one Workload per run
    def spec(self, n: int) -> FileSpec:
        rng = random.Random(f"{self.seed}:spec:{n}")
        poison = None
        if rng.random() < self.poison_rate:
            poison = rng.choice(sorted(POISON))
        faults: tuple[str, ...] = ()
        if rng.random() < self.fault_rate:
            faults = tuple(rng.choices(FAULTS, FAULT_WEIGHTS, k=rng.randint(1, MAX_FILE_FAULTS)))
        fmt = _format(poison, rng)
        count = 0 if poison else rng.randint(1, MAX_ITEMS)
        return FileSpec(
            n=n,
            fmt=fmt,
            count=min(count, MAX_ARRAY_ITEMS) if fmt == "array" else count,
            poison=poison,
            spelling=rng.choices(("text", "json", "object"), (6, 2, 2))[0],
            faults=faults,
            delay=rng.uniform(0.02, 0.4) if rng.random() < self.delay_rate else 0.0,
            exact_numbers=rng.random() < self.exact_rate,
        )

    def feed_order(self, count: int, repeat_rate: float) -> list[int]:
        """Files 0..count-1 in order, with a share of them published again 1-2 times,
        each copy up to a few hundred inputs after its original."""
        rng = random.Random(f"{self.seed}:order")
        slots = [(float(n), n) for n in range(count)]
        for n in range(count):
            if rng.random() < repeat_rate:
                slots.extend((n + rng.uniform(0.5, 300.0), n) for _ in range(rng.randint(1, 2)))
        return [n for _, n in sorted(slots)]

    def items(self, n: int) -> list[bytes]:
        """The file's transactions as the service must write them: compact JSON."""
        spec = self.spec(n)
        if spec.fmt in CSV_FORMATS:
            return [workload_csv.item(row) for row in self.csv_rows(n)]
        rng = random.Random(f"{self.seed}:items:{n}")
        out = []
        for i in range(spec.count):
            item = orjson.dumps({
                "id": f"s{self.seed}-f{n}-t{i}",
                "file": n,
                "seq": i,
                "account": f"acct-{rng.randrange(10_000):04d}",
                "amount": "\x00amount" if spec.exact_numbers else rng.randrange(-10**9, 10**9),
                "fee": round(rng.uniform(0, 100), 2),
                "currency": rng.choice(("EUR", "USD", "JPY", "GBP")),
                "memo": rng.choice(_MEMOS),
                "tags": rng.sample(("a", "b", "c", "d"), rng.randint(0, 3)),
                "meta": {"batch": n % 97, "ok": rng.random() < 0.5, "note": None},
            })
            if spec.exact_numbers:  # digits no float or int64 can hold, kept as written
                exact = f"{rng.randrange(10**29, 10**30)}.{rng.randrange(10**17):017d}0"
                item = item.replace(b'"\\u0000amount"', exact.encode())
            out.append(item)
        return out

    def csv_rows(self, n: int) -> list[tuple[str, ...]]:
        spec = self.spec(n)
        return workload_csv.rows(random.Random(f"{self.seed}:items:{n}"), f"s{self.seed}-f{n}",
                                 n, spec.count, spec.exact_numbers)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one Workload per run
    def body(self, n: int) -> tuple[bytes, tuple[tuple[str, str], ...]]:
        """The file as served: body and response headers."""
        spec = self.spec(n)
        if spec.poison == "invalid_json":
            return f'[{{"id":"broken-{n}","amount":1'.encode(), ()
        if spec.poison == "not_an_object":
            return b'[1, 2, 3]\n', ()
        if spec.poison == "bad_gzip":  # a gzip stream cut short, with a matching length
            return gzip.compress(b'{"id":"cut"}\n' * 50, mtime=0)[:-12], (
                ("Content-Encoding", "gzip"),)
        if spec.poison == "bad_csv":
            return workload_csv.broken(n), ()
        if spec.fmt in CSV_FORMATS:
            return workload_csv.body(self.csv_rows(n), random.Random(f"{self.seed}:csv:{n}"),
                                     gzipped=spec.fmt == "csv-gzip")
        items = self.items(n)
        ndjson = b"".join(item + (b"\n\n" if i % 7 == 3 else b"\n") for i, item in enumerate(items))
        if spec.fmt == "array":
            return b"[\n" + b",\n".join(items) + b"\n]\n", (("Content-Type", "application/json"),)
        if spec.fmt == "gzip-file":
            return gzip.compress(ndjson, mtime=0), (("Content-Type", "application/gzip"),)
        if spec.fmt == "gzip-encoding":
            return gzip.compress(ndjson, mtime=0), (("Content-Encoding", "gzip"),)
        return ndjson, (("Content-Type", "application/x-ndjson"),)

    def input_value(self, n: int, base_url: str) -> bytes:
        """The input record for file ``n``: its URL, spelled one of three ways."""
        spec = self.spec(n)
        if spec.poison == "bad_input":
            return f"not a url: file {n}".encode()
        url = f"{base_url}/{spec.path}"
        if spec.spelling == "json":
            return orjson.dumps(url)
        if spec.spelling == "object":
            return orjson.dumps({"url": url, "n": n})
        return url.encode()

    def expected(self, value: bytes | None) -> Expected | None:
        """What an input record must produce; None if no file of this workload made it."""
        value = value or b""
        bad = _BAD_INPUT.match(value)
        if bad:
            n = int(bad.group(1))
            return Expected(n, None, None, POISON["bad_input"])
        found = _FILE_NUMBER.search(value)
        if not found:
            return None
        n = int(found.group(1))
        spec = self.spec(n)
        if spec.spelling == "text":
            url = value.decode()
        else:
            doc = orjson.loads(value)
            url = doc["url"] if isinstance(doc, dict) else doc
        if spec.poison:
            return Expected(n, url, None, spec.dlq_reason)
        return Expected(n, url, tuple(self.items(n)), None)


def _format(poison: str | None, rng: random.Random) -> str:
    """A file's format; a poison file's must make it fail the way POISON says."""
    fmt = rng.choice(FORMATS)
    if poison == "bad_gzip":
        return "gzip-encoding"
    if poison == "bad_csv":
        return "csv"
    if poison in ("invalid_json", "not_an_object") and fmt in CSV_FORMATS:
        return "ndjson"
    return fmt


def mark_repeats(inputs: dict[tuple[int, int], Expected]) -> dict[tuple[int, int], Expected]:
    """With DEDUP on: a good file's later copies in its partition must write nothing.

    Only committed outputs are remembered, so every copy of a poison file is
    dead-lettered again. Copies the feeder sent twice count as repeats too."""
    seen: set[tuple[int, int]] = set()
    marked = {}
    for (p, o), want in sorted(inputs.items()):
        if want.items is not None and (p, want.n) in seen:
            want = dataclasses.replace(want, items=())
        elif want.items is not None:
            seen.add((p, want.n))
        marked[(p, o)] = want
    return marked
