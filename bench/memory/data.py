"""Files for the memory benchmark (bench/memory/run.py): deterministic NDJSON transactions.

A line is one transaction of about 136 bytes: a random id, an amount with up to ten
digits, two account addresses, a memo and a time. gzip shrinks such lines about 3.9
times, as random digits allow. Every number prints back unchanged through orjson, so
the service's parser keeps its fast path. Big files are generated once and kept,
gzipped, in .cache/bench-memory/files/ (the name holds the generator's version, the
seed and the decompressed size).
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import ROOT

VERSION = 1  # part of every cached file's name: bump it when a line's form changes
CACHE = ROOT / ".cache" / "bench-memory" / "files"
LONGEST_LINE = 200  # above any generated line; the padded last line needs this much room
_MEMOS = ("invoice", "refund", "salary", "rent", "subscription", "transfer", "fee",
          "payout", "settlement", "card purchase")
_CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK")
_EPOCH = 1_795_996_800  # 2026-11-29T00:00:00Z
_CHUNK = 4096  # lines joined per write


def transaction(rng: random.Random, i: int, pad: int = 0) -> bytes:
    """Transaction ``i`` as one NDJSON line; ``pad`` extra bytes go into its memo."""
    units = rng.randrange(1, 10**10)
    units += 1 if units % 10 == 0 else 0  # 12.3450 would print back as 12.345
    memo = f"{rng.choice(_MEMOS)} {rng.randrange(10**4)}" + "x" * pad
    return (f'{{"id":"tx-{rng.getrandbits(48):012x}","amount":{units // 10000}.'
            f'{units % 10000:04d},"ccy":"{rng.choice(_CURRENCIES)}",'
            f'"from":"acct-{rng.randrange(10**6):06d}","to":"acct-{rng.randrange(10**6):06d}",'
            f'"memo":"{memo}","ts":{_EPOCH + i * 7 + rng.randrange(7)}}}\n').encode()


def lines_of_size(seed: int, size: int) -> Iterator[bytes]:
    """Lines totalling exactly ``size`` bytes: the last one's memo is padded to fit."""
    if size < LONGEST_LINE:
        raise ValueError(f"size must be at least {LONGEST_LINE} bytes")
    rng = random.Random(seed)
    written = i = 0
    while True:
        state = rng.getstate()
        line = transaction(rng, i)
        if len(line) > LONGEST_LINE:
            raise AssertionError(f"a line of {len(line)} bytes exceeds LONGEST_LINE")
        if written + len(line) + LONGEST_LINE > size:
            rng.setstate(state)  # the same transaction again, padded to the rest
            yield transaction(rng, i, pad=size - written - len(line))
            return
        written += len(line)
        i += 1
        yield line


def lines_of_count(seed: int, count: int) -> bytes:
    """A small file: ``count`` lines, uncompressed."""
    rng = random.Random(seed)
    return b"".join(transaction(rng, i) for i in range(count))


@dataclass(frozen=True)
class DataFile:
    path: Path  # gzip NDJSON
    size: int  # decompressed bytes
    transactions: int


def write_gzip(path: Path, seed: int, size: int) -> int:
    """Write ``lines_of_size`` gzipped (no name, no time: the same bytes each time);
    returns the number of transactions."""
    count = 0
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", filename="",
                                                 compresslevel=6, mtime=0) as out:
        chunk: list[bytes] = []
        for line in lines_of_size(seed, size):
            chunk.append(line)
            if len(chunk) == _CHUNK:
                out.write(b"".join(chunk))
                count += len(chunk)
                chunk.clear()
        out.write(b"".join(chunk))
        count += len(chunk)
    return count


def cached_gzip(seed: int, size: int, cache: Path = CACHE) -> DataFile:
    """The gzip file for (seed, size), generated on first use."""
    path = cache / f"tx-v{VERSION}-seed{seed}-{size}.ndjson.gz"
    count_file = path.with_name(path.name + ".count")
    if not (path.exists() and count_file.exists()):
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        count = write_gzip(partial, seed, size)
        partial.rename(path)
        count_file.write_text(str(count))
    return DataFile(path, size, int(count_file.read_text()))
