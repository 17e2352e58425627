"""Run the benchmarks: ``python -m bench.run --quick`` (S1: service, naive, R2) or ``--all``.

Each scenario gets its own private broker (tools/local_kafka.py, a free port, a temp
dir, stopped by its pid at the end even on failure) and one file server; every
variant run gets fresh topics and the same files. Variants are interleaved, round
by round, the order rotated each round. Results: results/bench/latest.{json,md,png} (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import uvloop

from bench import ROOT, latency, peer, report, txn_scenario
from bench.kstreams_peer import ensure_built as build_kstreams_peer
from bench.plan import SERVICE, plan, r2
from bench.variant import Ctx, Variant, run
from bench.workload import Spec, make_files, serve
from tools import local_kafka

RESULTS = ROOT / "results" / "bench"  # git-ignored: results change every run
WARM_UP_FILES = 12000  # 3,000 left the first timed run slow (docs/benchmarks.md)


async def scenario(name: str, specs: list[Spec], variants: list[Variant], runs: int,
                   timeout: float, warm: bool, results: list[dict],
                   after_round: Callable[[], object]) -> None:
    """Append each run's result to ``results``; call ``after_round`` after each round
    (it writes the report, so an interrupted run keeps its finished rounds)."""
    data = Path(tempfile.mkdtemp(prefix=f"bench-{name}-kafka-"))
    broker = local_kafka.start(data=data)
    logs = Path(tempfile.mkdtemp(prefix=f"bench-{name}-logs-"))
    print(f"bench {name}: broker pid {broker.pid} at {broker.bootstrap}; logs in {logs}",
          flush=True)
    try:
        if warm:
            await warm_up(broker, logs, timeout)
        files = make_files(specs[0])  # the specs of a scenario differ in partitions only
        server = await serve(files, specs[0].latency_ms)
        try:
            for round_no in range(runs):
                for spec in specs:
                    ctx = Ctx(broker.bootstrap, broker.pid, server.base_url, spec, files, logs,
                              timeout)
                    for variant in _rotated(variants, round_no):
                        results.append(await _one(name, ctx, variant, round_no))
                after_round()
        finally:
            await server.close()
    finally:
        local_kafka.stop(data)


async def warm_up(broker: local_kafka.Broker, logs: Path, timeout: float) -> None:
    """Untimed runs first, R2 then the service, on small files: a fresh JVM compiles its
    hot paths (transactions; then group membership and read_committed fetches) in its
    first minutes."""
    spec = Spec(files=WARM_UP_FILES, partitions=8, latency_ms=0)
    files = make_files(spec)
    server = await serve(files, spec.latency_ms)
    try:
        ctx = Ctx(broker.bootstrap, broker.pid, server.base_url, spec, files, logs, timeout)
        for variant in (r2(), SERVICE):
            await _one("warm-up", ctx, variant, 0)
    finally:
        await server.close()


async def _one(name: str, ctx: Ctx, variant: Variant, round_no: int) -> dict:
    started = time.monotonic()
    try:
        runner = (txn_scenario.run if variant.kind == "txn_loop"
                  else latency.run if ctx.spec.rate else run)
        result = await runner(ctx, variant, round_no)
    except Exception as exc:  # one broken run is reported, not fatal to the others
        result = {"variant": variant.name, "round": round_no, "ok": False,
                  "partitions": ctx.spec.partitions, "error": repr(exc)}
    result["scenario"] = name
    print(f"  {name} p={ctx.spec.partitions} round {round_no} {variant.name:<16} "
          f"{report.one_line(result)} ({time.monotonic() - started:.0f}s)", flush=True)
    return result


def _rotated(variants: list[Variant], round_no: int) -> list[Variant]:
    k = round_no % len(variants)
    return variants[k:] + variants[:k]


def machine() -> dict:
    return {
        "nproc": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "kafka": local_kafka.kafka_version(),
        "loadavg_at_start": list(os.getloadavg()),
        "other_processes_at_start": _busy_processes(),
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _busy_processes() -> list[str]:
    """What else was running: the processes using the most CPU, and every other JVM."""
    out = subprocess.run(["ps", "-eo", "pcpu,rss,args", "--sort=-pcpu"], capture_output=True,
                         text=True).stdout.splitlines()[1:]
    keep = [line for line in out[:6]] + [line for line in out[6:] if " java " in f" {line} "]
    return [" ".join(line.split())[:160] for line in keep]


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="S1 with naive and R2 only")
    mode.add_argument("--all", action="store_true", help="every scenario")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated scenarios (with --all); "
                        "R2, the retry_backoff_ms sweep, runs only when named here")
    parser.add_argument("--s1-files", type=int)
    parser.add_argument("--naive-files", type=int)
    parser.add_argument("--s2-files", type=int, default=200)
    parser.add_argument("--s3-files", type=int, default=6000)
    parser.add_argument("--sweep-files", type=int, default=3000)
    parser.add_argument("--txn-transactions", type=int, default=2000,
                        help="TXN: transactions per run of each client")
    parser.add_argument("--txn-producer", default=txn_scenario.NEW_LAYER,
                        help="TXN: the new layer's producer class (module.Class)")
    parser.add_argument("--s4-rate", type=float, help="S4 files/s offered (default: half "
                        "the service's S1 median files/s of the same run, or of --merge's)")
    parser.add_argument("--s4-delay-ms", type=int, default=50, help="S4 file server delay")
    parser.add_argument("--s4-seconds", type=float, default=60, help="S4 load duration")
    parser.add_argument("--timeout", type=float, default=900, help="per run, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--add", action="append", default=[], metavar="NAME[@MODULE]:K=V,...",
                        help="also run the service with other settings (or bench.probe)")
    parser.add_argument("--variants", default="", help="run only these variants (names)")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other scenarios' runs from the last results of this mode")
    parser.add_argument("--profile", default="",
                        help="comma-separated variants to sample with py-spy (needs py-spy)")
    args = parser.parse_args(argv)
    args.s1_files = args.s1_files or (4000 if args.quick else 20_000)
    args.naive_files = args.naive_files or (300 if args.quick else 1000)
    return args


def kept_runs(args: argparse.Namespace, info: dict, rerun: set[str]) -> list[dict]:
    """With --merge: the previous results of this mode, less the scenarios run again now."""
    previous = args.out / f"{info['mode']}.json"
    if not args.merge or not previous.exists():
        return []
    doc = orjson.loads(previous.read_bytes())
    kept = [r for r in doc["runs"] if r.get("scenario") not in rerun]
    info["merged"] = {"from": doc["info"]["started"], "scenarios": sorted(
        {r["scenario"] for r in kept if "scenario" in r}), "sizes": doc["info"].get("sizes")}
    return kept


async def main(args: argparse.Namespace) -> int:
    # Fresh topics are missing from metadata, or answer NotLeaderForPartition, for a
    # moment; aiokafka retries and logs each time.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    started = time.time()
    info = {"mode": "quick" if args.quick else "all", "started": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "runs": args.runs, "machine": machine()}
    info["sizes"] = {"s1_files": args.s1_files, "naive_files": args.naive_files,
                     "s2_files": args.s2_files, "s3_files": args.s3_files,
                     "sweep_files": args.sweep_files, "s4_seconds": args.s4_seconds,
                     "txn_transactions": args.txn_transactions,
                     "s4_delay_ms": args.s4_delay_ms}
    chosen = {s.strip() for s in args.only.split(",") if s.strip()}
    # R2 (the retry_backoff_ms sweep) answered its question (README): only on request.
    scenarios = {k: v for k, v in plan(args).items()
                 if k in chosen or (not chosen and k != "R2")}
    results = kept_runs(args, info, set(scenarios))
    if "S4" in scenarios and args.s4_rate is None and "S1" not in scenarios and not any(
            r.get("scenario") == "S1" for r in results):
        raise SystemExit("bench: S4 needs --s4-rate, or S1 in the same run (or --merge)")

    def write() -> list[Path]:
        info["duration_s"] = round(time.time() - started)
        return report.write(args.out, info, results)
    for name, (specs, variants) in scenarios.items():
        if any(v.kind == "peer" for v in variants):
            info["peer_error"] = peer.ensure_venv()
            if info["peer_error"]:
                print(f"bench: peer missing: {info['peer_error']}", file=sys.stderr)
                variants = [v for v in variants if v.kind != "peer"]
        if name == "S4":
            spec, source = latency.load_spec(specs[0], results, args.s4_rate, args.s4_seconds)
            specs, info["s4_rate"] = [spec], {"files_per_s": spec.rate, "from": source}
        if any(v.kind == "kstreams" or v.cfg.get("client") == "java" for v in variants):
            info["kstreams_error"] = build_kstreams_peer()
            if info["kstreams_error"]:
                print(f"bench: kstreams peer missing: {info['kstreams_error']}", file=sys.stderr)
                variants = [v for v in variants
                            if v.kind != "kstreams" and v.cfg.get("client") != "java"]
        await scenario(name, specs, variants, args.runs, args.timeout, args.warm_up,
                       results, write)
    paths = write()
    print("bench: wrote " + ", ".join(str(p) for p in paths))
    print((args.out / "latest.md").read_text())
    # A discarded run is reported (latest.md lists it); fail only when a variant has no
    # run that passed the gate, as then its ratios cannot be computed.
    def variant(r: dict) -> tuple:
        return r.get("scenario"), r.get("partitions"), r["variant"]

    ran = {variant(r) for r in results}
    passed = {variant(r) for r in results if r.get("ok")}
    for missing in sorted(ran - passed, key=str):
        print(f"bench: no run of {missing} passed the gate", file=sys.stderr)
    return 0 if ran == passed else 1


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        sys.exit(runner.run(main(arguments())))
