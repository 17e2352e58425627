"""`make demo`: the whole product on this machine, end to end.

Serves generated sample files over HTTP, publishes their URLs to a fresh input
topic on the local broker, runs `python -m app` until every record is committed,
stops it with SIGTERM, then reads the output with read_committed and checks
that every transaction arrived exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import logging
import random
import re
import sys
import time

from aiohttp import ClientError, ClientSession

from tools.fileserver import FileServer, Route
from tools.kafka_io import Topics, by_source, create_topics, lag, produce, read_all
from tools.local_kafka import free_port
from tools.proc import ROOT, ChildProcess, python_module

# The service's CSV_COLUMNS for the CSV samples: the amount is a number, exact.
CSV_COLUMNS = "tx,account,amount:number,currency"


def sample_files(count: int, seed: int = 42) -> dict[str, tuple[bytes, dict, list[bytes]]]:
    """name -> (body, response headers, the transactions it holds as compact JSON)."""
    rng = random.Random(seed)
    files: dict[str, tuple[bytes, dict, list[bytes]]] = {}
    for n in range(count):
        rows = [(f"{n:03d}-{i:03d}", f"acct-{rng.randrange(100):02d}",
                 f"{rng.randrange(10**30)}.{rng.randrange(10**12):012d}")
                for i in range(rng.randint(1, 50))]
        items = [(f'{{"tx":"{tx}","account":"{account}","amount":{amount},'
                  f'"currency":"EUR"}}').encode() for tx, account, amount in rows]
        kind = n % 6
        if kind >= 4:
            body = ledger_csv(rows)
            name = f"ledger-{n:03d}.csv" + (".gz" if kind == 5 else "")
            files[name] = (gzip.compress(body) if kind == 5 else body, {}, items)
            continue
        ndjson = b"".join(i + b"\n" for i in items)
        if kind == 0:
            files[f"ledger-{n:03d}.ndjson"] = (ndjson, {}, items)
        elif kind == 1:
            files[f"ledger-{n:03d}.json"] = (b"[\n" + b",\n".join(items) + b"\n]", {}, items)
        elif kind == 2:
            files[f"ledger-{n:03d}.ndjson.gz"] = (gzip.compress(ndjson), {}, items)
        else:
            files[f"ledger-{n:03d}.ndjson"] = (gzip.compress(ndjson),
                                               {"Content-Encoding": "gzip"}, items)
    files["broken.json"] = (b'[{"tx": "half a file"', {}, [])  # these two go to the DLQ
    files["broken.csv"] = (ledger_csv([("x-000", "acct-01", "12.50"), ("x-001", "acct-02", "1,5")]),
                           {}, [])
    return files


def ledger_csv(rows: list[tuple[str, str, str]]) -> bytes:
    """A spreadsheet's export: a BOM, CRLF, the text fields quoted."""
    lines = ["tx,account,amount,currency"]
    lines += [f'"{tx}","{account}",{amount},"EUR"' for tx, account, amount in rows]
    return ("\ufeff" + "\r\n".join(lines) + "\r\n").encode()


async def serve(files: dict) -> FileServer:
    server = await FileServer().start()
    for name, (body, headers, _) in files.items():
        server.add(name, Route(body, headers=headers))
    return server


def start_service(bootstrap: str, topics: Topics, http_port: int) -> ChildProcess:
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "INPUT_TOPIC": topics.input,
           "OUTPUT_TOPIC": topics.output, "DLQ_TOPIC": topics.dlq, "GROUP_ID": topics.group,
           "POD_NAME": "demo-0", "DOWNLOAD_ALLOW_PRIVATE_NETWORKS": "true",
           "HTTP_PORT": str(http_port), "LOG_FORMAT": "text",  # for a person to read
           "CSV_COLUMNS": CSV_COLUMNS}
    log_path = ROOT / ".cache" / "demo-service.log"
    log_path.parent.mkdir(exist_ok=True)
    log_path.unlink(missing_ok=True)  # this run's log only
    return ChildProcess(python_module("app"), env, log_path).start()


async def outputs_so_far(http_port: int) -> int:
    """The service's own count, from its /metrics endpoint."""
    try:
        async with ClientSession() as http, http.get(
                f"http://127.0.0.1:{http_port}/metrics") as response:
            text = await response.text()
    except ClientError:
        return 0
    match = re.search(r"^txingest_output_records_total (\S+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


async def watch(bootstrap: str, topics: Topics, total: int, service: ChildProcess,
                http_port: int, timeout: float) -> None:
    start = time.monotonic()
    while True:
        remaining = await lag(bootstrap, topics)
        done, elapsed = total - remaining, time.monotonic() - start
        written = await outputs_so_far(http_port)
        print(f"\r  files {done:>3}/{total}   transactions {written:>5}"
              f"   {written / elapsed:7.0f} txn/s   {elapsed:5.1f}s", end="", flush=True)
        if remaining == 0:
            print()
            return
        if not service.alive:
            raise SystemExit(f"\nthe service exited early with {service.returncode}")
        if time.monotonic() - start > timeout:
            raise SystemExit("\ntimed out waiting for the service")
        await asyncio.sleep(0.5)


def report(files: dict, base: str, outputs: list, dead: list) -> bool:
    """The summary table: what arrived, checked against the source files."""
    expected = {f"{base}/{name}": items for name, (_, _, items) in files.items() if items}
    got = by_source(outputs)
    duplicates = missing = wrong = 0
    for url, items in expected.items():
        values = [r.value for r in got.get(url, [])]
        duplicates += max(0, len(values) - len(set(values)))
        missing += len(set(items) - set(values))
        wrong += len(set(values) - set(items))
    ok = duplicates == missing == wrong == 0 and len(dead) == 2
    print(f"  input files           {len(files)}")
    print(f"  transactions expected {sum(len(v) for v in expected.values())}")
    print(f"  transactions produced {len(outputs)} (read_committed)")
    print(f"  duplicates {duplicates}   missing {missing}   altered {wrong}")
    print(f"  dead-lettered         {len(dead)} ({', '.join(_reasons(dead))})")
    if outputs:
        print(f"  e.g. {outputs[0].value.decode()}")
    print("  exactly once: " + ("YES" if ok else "NO"))
    return ok


def _reasons(dead: list) -> list[str]:
    import orjson
    return [orjson.loads(r.value)["reason"] for r in dead]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()

    files = sample_files(args.files)
    server = await serve(files)
    base = server.base_url
    topics = await create_topics(args.bootstrap, args.partitions, name="demo")
    print(f"demo: {len(files)} files on {base}, input topic {topics.input}")
    # Keyed by the file's name, as producers of the input should (see docs/dedup.md).
    await produce(args.bootstrap, topics.input, [f"{base}/{n}".encode() for n in files],
                  args.partitions, keys=[n.encode() for n in files])
    http_port = free_port()
    service = start_service(args.bootstrap, topics, http_port)
    try:
        await watch(args.bootstrap, topics, len(files), service, http_port, timeout=180)
    finally:
        code = await service.stop(60)
        await server.close()
    print(f"demo: service stopped with exit code {code}; its log: {service.log_path}")
    outputs = await read_all(args.bootstrap, topics.output)
    dead = await read_all(args.bootstrap, topics.dlq)
    return 0 if report(files, base, outputs, dead) and code == 0 else 1


if __name__ == "__main__":
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # topic-creation chatter
    sys.exit(asyncio.run(main()))
