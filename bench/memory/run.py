"""Peak memory of one service process per scenario: ``python -m bench.memory [--only ...]``.

A private broker (tools/local_kafka.py, stopped by its pid) and a file server on
127.0.0.1 serve every scenario; each gets fresh topics and ONE ``python -m app`` with
default settings (bar the topics, the group, the pod name, the metrics port and
private-network downloads). The inputs are published at once after the service is
ready; when the group's lag is 0 and the output holds every transaction exactly once,
VmHWM is read and the service gets SIGTERM. ``--source DIR`` measures another checkout
(its code, this interpreter). Results: .cache/results/bench-memory/. Scenarios:

  small    3,000 files of 20 transactions on 16 partitions (--small-files)
  big16    16 partitions, each one gzip NDJSON file of 32 MiB decompressed, together
  maxfile  one gzip file of the checkout's MAX_FILE_BYTES default, on one partition
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer

from bench import ROOT, gate
from bench.memory.data import cached_gzip, lines_of_count
from bench.memory.probe import GroupLag, MemorySampler, MetricsScraper, proc_status_kb
from bench.memory.report import table, write_json
from bench.memory.service import Service, describe, service_env
from bench.workload import Files
from tools import local_kafka
from tools.fileserver import FileServer, Route
from tools.kafka_io import Topics, create_topics, delete_topics

SCENARIOS = ("small", "big16", "maxfile")
RESULTS = ROOT / ".cache" / "results" / "bench-memory"
BIG_FILE_BYTES = 32 * 1024 * 1024
SMALL_FILE_TRANSACTIONS = 20
SEEDS = {"small": 1_000_000, "big16": 2_000_000, "maxfile": 3_000_000}


@dataclass
class Workload:
    partitions: int
    files: Files


def workload(name: str, args: argparse.Namespace, max_file_bytes: int) -> Workload:
    """The scenario's files (file n goes to partition n % partitions)."""
    if name == "small":
        bodies = [lines_of_count(SEEDS[name] + n, SMALL_FILE_TRANSACTIONS)
                  for n in range(args.small_files)]
        return Workload(16, Files(bodies, [SMALL_FILE_TRANSACTIONS] * len(bodies)))
    count, size = (16, BIG_FILE_BYTES) if name == "big16" else (1, max_file_bytes)
    made = [cached_gzip(SEEDS[name] + n, size) for n in range(count)]
    return Workload(count, Files([f.path.read_bytes() for f in made],
                                 [f.transactions for f in made]))


async def publish(bootstrap: str, topic: str, urls: list[str], partitions: int) -> float:
    """Send every input in one go (n to partition n % partitions); when the first went."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        first = time.monotonic()
        for n, link in enumerate(urls):
            await producer.send(topic, link.encode(), key=str(n).encode(),
                                partition=n % partitions)
        await producer.flush()
        return first
    finally:
        await producer.stop()


async def until_done(lag: GroupLag, service: Service, deadline: float) -> float:
    """Poll the group's lag until 0; when it was seen. Raises if the service dies or
    the deadline passes."""
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(f"service exited with {service.proc.returncode} while working")
        if await lag.now() == 0:
            return time.monotonic()
        await asyncio.sleep(0.25)
    raise RuntimeError("timed out before the group's lag reached 0")


async def scenario(name: str, args: argparse.Namespace, broker: local_kafka.Broker,
                   source: dict, logs: Path) -> dict:
    """One scenario, start to end; ``source`` is what ``describe`` found in the checkout."""
    work = workload(name, args, source["max_file_bytes"])
    result: dict = {"scenario": name, "partitions": work.partitions,
                    "files": len(work.files.bodies), "expected": work.files.transactions,
                    "ok": False}
    server = await FileServer().start()
    urls = [server.add(f"f/{n}", Route(body)) for n, body in enumerate(work.files.bodies)]
    topics = await create_topics(broker.bootstrap, work.partitions, name=f"mem-{name}")
    port = local_kafka.free_port()
    env = service_env(args.source, source["settings"], {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "INPUT_TOPIC": topics.input,
        "OUTPUT_TOPIC": topics.output, "DLQ_TOPIC": topics.dlq, "GROUP_ID": topics.group,
        "POD_NAME": f"bench-memory-{uuid.uuid4().hex[:8]}", "HTTP_PORT": str(port),
        "DOWNLOAD_ALLOW_PRIVATE_NETWORKS": "true", **args.settings})
    service = Service(args.source, env, logs / f"{name}.log")
    result["log"] = str(service.log)
    sampler, scraper = MemorySampler(service.pid), MetricsScraper(port)
    watchers = [asyncio.create_task(sampler.run()), asyncio.create_task(scraper.run())]
    try:
        await service.wait_ready(port, timeout=120)
        first, done = await _measure(work, topics, service, broker, urls, args.timeout, result)
        result.update(published_at_s=sampler.at(first), lag_zero_at_s=sampler.at(done))
        result["peak_rss_mb"] = proc_status_kb(service.pid).get("VmHWM", 0) / 1024
    except Exception as exc:  # reported and the run fails; the other scenarios go on
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["peak_rss_mb"] = sampler.hwm_kb / 1024  # the last seen before it failed
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        result["exit_code"] = await service.stop(timeout=args.stop_timeout)
        await server.close()
        await delete_topics(broker.bootstrap, topics)
    counted = scraper.reserved_peak
    result.update(max_sampled_rss_mb=sampler.max_rss_kb / 1024, loop_lag_max_s=scraper.shown(),
                  counted_peak_mb="n/a" if counted is None else round(counted / 2**20),
                  rss_curve=sampler.curve, metrics_scrapes=scraper.scrapes)
    result["ok"] = result["ok"] and result["exit_code"] == 0
    return result


async def _measure(work: Workload, topics: Topics, service: Service,
                   broker: local_kafka.Broker, urls: list[str], timeout: float,
                   result: dict) -> tuple[float, float]:
    """Publish, wait for lag 0, check the output; fills ``result``. Returns when the
    first input was sent and when the lag was seen at 0 (time.monotonic())."""
    async with GroupLag(broker.bootstrap, topics) as lag:
        first = await publish(broker.bootstrap, topics.input, urls, work.partitions)
        done = await until_done(lag, service, first + timeout)
    seconds = done - first
    committed = [len(range(p, len(urls), work.partitions)) for p in range(work.partitions)]
    check = await gate.check(broker.bootstrap, topics.output, topics.dlq, committed,
                             work.files.counts, work.partitions)
    result.update(seconds=seconds, output_records=check["read"], gate=check,
                  records_per_s=check["read"] / seconds, ok=check["ok"])
    if not check["ok"]:
        result["error"] = f"output check failed: {check}"
    return first, done


def prepare(names: list[str], max_file_bytes: int) -> None:
    """Generate the big files now (once, into the cache), before the broker starts."""
    if "big16" in names:
        for n in range(16):
            cached_gzip(SEEDS["big16"] + n, BIG_FILE_BYTES)
    if "maxfile" in names:
        cached_gzip(SEEDS["maxfile"], max_file_bytes)


def machine() -> dict:
    return {"nproc": os.cpu_count(), "python": sys.version.split()[0],
            "interpreter": sys.executable, "kafka": local_kafka.kafka_version(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "loadavg_at_start": list(os.getloadavg())}


async def main(args: argparse.Namespace) -> int:
    # Fresh topics answer NotLeaderForPartition for a moment; aiokafka retries and logs it.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    info = {"started": stamp, "source": str(args.source), **describe(args.source),
            "settings_set": args.settings, "timeout_s": args.timeout, "machine": machine()}
    settings = info.pop("settings")
    names = [n for n in SCENARIOS if n in args.only]
    prepare(names, info["max_file_bytes"])
    logs = args.out / "logs" / stamp
    logs.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="bench-memory-kafka-"))
    broker = local_kafka.start(data=data)
    print(f"bench-memory: {args.source} at {info['commit'][:12]}"
          f"{' (uncommitted changes)' if info['dirty'] else ''}; broker pid {broker.pid}; "
          f"logs in {logs}", flush=True)
    results: list[dict] = []
    path = None
    try:
        for name in names:
            results.append(await scenario(name, args, broker, {**info, "settings": settings},
                                          logs))
            print(table(results[-1:], header=not results[:-1]), flush=True)
            path = write_json(args.out, stamp, info, results)
    finally:
        local_kafka.stop(data)
    print(f"\n{table(results)}\nbench-memory: wrote {path}")
    for failed in (r for r in results if not r["ok"]):
        print(f"bench-memory: {failed['scenario']} failed: {failed.get('error')} "
              f"(exit code {failed['exit_code']}; log {failed['log']})", file=sys.stderr)
    return 0 if all(r["ok"] for r in results) else 1


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help="comma-separated scenarios (default: all)")
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="the checkout whose app to run (default: this one)")
    parser.add_argument("--timeout", type=float, default=600,
                        help="per scenario, from publishing to lag 0, seconds")
    parser.add_argument("--stop-timeout", type=float, default=60,
                        help="wait this long for the exit after SIGTERM, then SIGKILL")
    parser.add_argument("--small-files", type=int, default=3000)
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="NAME=VALUE", help="a service setting other than its default")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.only = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = args.only - set(SCENARIOS)
    if unknown or not args.only:
        parser.error(f"--only takes some of {', '.join(SCENARIOS)}")
    args.source = args.source.resolve()
    args.settings = dict(kv.split("=", 1) for kv in args.settings)
    return args

