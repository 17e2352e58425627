"""The chaos workload's CSV files: rows as an export writes them (its own header names,
a column no field takes, quoting only where needed, a BOM or none, CRLF or LF), and the
transactions the service must make of them under the copiers' ``CSV_COLUMNS``. A CSV
transaction is flat: it has no tags or meta."""

from __future__ import annotations

import csv
import gzip
import io
import random

import orjson

CSV_FORMATS = ("csv", "csv-gzip")
CSV_HEADER = ("Transaction ID", "File", "Seq", "Account", "Amount", "Fee", "Currency",
              "Memo", "Batch")
CSV_COLUMNS = ("Transaction ID=id,File=file:number,Seq=seq:number,Account=account,"
               "Amount=amount:number,Fee=fee:number,Currency=currency,Memo=memo?")
_MEMOS = ("coffee", "naïve café ✓", "日本 送金", 'quote " and \\ backslash', "tab\there",
          "emoji 🙂", "", "two\r\nlines, a comma", 'ends "quoted"', "lf\nonly")

Row = tuple[str, ...]


def rows(rng: random.Random, name: str, n: int, count: int, exact: bool) -> list[Row]:
    """File ``n``'s rows as text, in CSV_HEADER's order."""
    out: list[Row] = []
    for i in range(count):
        amount = (f"{rng.randrange(10**29, 10**30)}.{rng.randrange(10**17):017d}0"
                  if exact else str(rng.randrange(-10**9, 10**9)))
        fee = orjson.dumps(round(rng.uniform(0, 100), 2)).decode()
        out.append((f"{name}-t{i}", str(n), str(i), f"acct-{rng.randrange(10_000):04d}",
                    amount, fee, rng.choice(("EUR", "USD", "JPY", "GBP")), rng.choice(_MEMOS),
                    str(n % 97)))
    return out


def item(row: Row) -> bytes:
    """A row as the service must write it under CSV_COLUMNS: numbers as written."""
    tx, file, seq, account, amount, fee, currency, memo, _ = row
    number = orjson.Fragment
    return orjson.dumps({"id": tx, "file": number(file), "seq": number(seq),
                         "account": account, "amount": number(amount), "fee": number(fee),
                         "currency": currency, "memo": memo})


def body(table: list[Row], rng: random.Random, gzipped: bool
         ) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """The file as served, and its response headers."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=rng.choice(("\r\n", "\n")))
    writer.writerow(CSV_HEADER)
    writer.writerows(table)
    text = ("\ufeff" if rng.random() < 0.3 else "") + out.getvalue()
    if gzipped:
        return gzip.compress(text.encode(), mtime=0), (("Content-Type", "application/gzip"),)
    return text.encode(), (("Content-Type", "text/csv; charset=utf-8"),)


def broken(n: int) -> bytes:
    """A poison CSV file: its one row is six fields short."""
    return ",".join(CSV_HEADER).encode() + f"\nt-{n},{n},0\n".encode()
