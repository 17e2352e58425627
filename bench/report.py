"""Results: medians and spread per variant, the goals, and latest.{json,md,png}.

Only runs that passed the correctness gate count; the others are listed as discarded.
A transaction is a committed Kafka transaction: one per input record for the service,
naive and R2 (no file here is dead-lettered).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

import orjson

from bench import verdicts
from bench.chart import draw
from bench.headline import headline, median

GOALS = [
    # (name, numerator, denominator, at least)
    ("S1 service files/s >= 16x naive", ("S1", "service", "files_per_s"),
     ("S1", "naive", "files_per_s"), 16.0),
    ("S1 service txn/s >= 0.9x R2", ("S1", "service", "files_per_s"),
     ("S1", "r2", "files_per_s"), 0.9),
    # The same against R2 through the service's own committer: today's commit path alone.
    ("S1 service txn/s >= 0.9x r2_committer (R2 through the service's committer)",
     ("S1", "service", "files_per_s"), ("S1", "r2_committer", "files_per_s"), 0.9),
    ("S1 service N=32 files/s >= 1.0x U", ("S1", "service_n32", "files_per_s"),
     ("S1", "upper_bound", "files_per_s"), 1.0),
    ("S1 DEDUP=url costs < 10% of files/s (>= 0.9x service)",
     ("S1", "service_dedup", "files_per_s"), ("S1", "service", "files_per_s"), 0.9),
    ("S2 service msgs/s >= 0.9x U", ("S2", "service", "msgs_per_s"),
     ("S2", "upper_bound", "msgs_per_s"), 0.9),
    ("S2 service msgs/s >= 0.6x R1", ("S2", "service", "msgs_per_s"),
     ("S2", "r1", "msgs_per_s"), 0.6),
    ("S2 service msgs/s >= 2x peer", ("S2", "service", "msgs_per_s"),
     ("S2", "peer", "msgs_per_s"), 2.0),
    # Kafka Streams (bench/kstreams_peer.py): one stream thread in S2, one per partition in S1.
    ("S2 service msgs/s >= 1.0x Kafka Streams", ("S2", "service", "msgs_per_s"),
     ("S2", "kstreams", "msgs_per_s"), 1.0),
    ("S1 service files/s >= 3x Kafka Streams", ("S1", "service", "files_per_s"),
     ("S1", "kstreams", "files_per_s"), 3.0),
    # Issue 26: one producer's sequential per-record transactions (bench/txn_scenario.py).
    ("TXN new layer txn/s >= 1.0x Kafka's Java client (retry.backoff.ms 5)",
     ("TXN", "txn_new_layer", "files_per_s"), ("TXN", "txn_java", "files_per_s"), 1.0),
]


QUICK_SIZES = ("s1_files", "naive_files")


def one_line(r: dict) -> str:
    if "error" in r:
        return f"ERROR {r['error'][:200]}"
    gate = r.get("gate", {})
    verdict = "ok" if r.get("ok") else f"DISCARDED gate={gate}"
    return (f"{r.get('files_per_s', 0):8.1f} files/s {r.get('msgs_per_s', 0):9.0f} msgs/s "
            f"rss {r.get('peak_rss_mb', 0):6.0f} MB  load {r['loadavg_start'][0]:.2f}  {verdict}")



def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "spread_pct": round(100 * (max(values) - min(values))
                                                  / statistics.median(values), 1)
            if statistics.median(values) else None}


def retry_wait_ms_per_txn(r: dict) -> float | None:
    """Time spent sleeping on "retry" answers (counted by bench/baselines.py or
    bench/probe.py, keyed "<request> backoff <N>ms"), per committed transaction."""
    retries = r.get("retries") or (r.get("probe") or {}).get("retries")
    if retries is None or not r.get("files"):
        return None
    waited = sum(n * float(key.rsplit(" ", 1)[1].removesuffix("ms"))
                 for key, n in retries.items())
    return waited / r["files"]


def summarise(results: list[dict]) -> dict:
    """(scenario, partitions, variant) -> metric -> stats, over the runs that passed."""
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        r["retry_wait_ms_per_txn"] = retry_wait_ms_per_txn(r)
        r["cpu_ms_per_txn"] = verdicts.cpu_ms_per_txn(r.get("cores", {}).get("child"),
                                                      r.get("files_per_s"))
        r["cpu_ms_per_txn_run"] = (1000 * r["cpu_s"] / r["files"]
                                   if r.get("cpu_s") and r.get("files") else None)
        r["cpu_us_per_msg"] = verdicts.cpu_us_per_msg(r.get("cores", {}).get("child"),
                                                      r.get("msgs_per_s"))
        if r.get("ok"):
            grouped[(r["scenario"], r["partitions"], r["variant"])].append(r)
    out: dict[tuple, dict] = {}
    for key, runs in grouped.items():
        metrics = {}
        for metric in ("files_per_s", "msgs_per_s", "peak_rss_mb", "first_commit_s",
                       "every_partition_committed_s", "self_timed_txn_per_s",
                       "retry_wait_ms_per_txn", "cpu_ms_per_txn", "cpu_ms_per_txn_run",
                       "cpu_us_per_msg",
                       "offered_per_s", "p50_ms", "p99_ms", "max_ms", "download_median_ms"):
            values = [r[metric] for r in runs if r.get(metric) is not None]
            if values:
                metrics[metric] = stats(values)
        for name in ("child", "broker", "runner"):
            values = [r["cores"][name] for r in runs if name in r.get("cores", {})]
            if values:
                metrics[f"cores_{name}"] = stats(values)
        out[key] = metrics
    return out


def probe_findings(results: list[dict]) -> dict:
    """From the instrumented service (bench/probe.py): per scenario, the median over its
    runs of each transaction phase's mean, and broker "retry" answers per 1000
    transactions."""
    out: dict = {}
    for r in results:
        if r.get("ok") and r.get("probe"):
            key = f"{r['scenario']} {r['partitions']}p {r['variant']}"
            slot = out.setdefault(key, {"phases_mean_ms": defaultdict(list),
                                        "retries_per_1000_txn": defaultdict(list)})
            txns = (r["probe"]["phases"].get("transaction", {}).get("n")
                    or int(r.get("service_summary", {}).get("committed", 0)) or 1)
            for phase, st in r["probe"]["phases"].items():
                slot["phases_mean_ms"][phase].append(st["mean_ms"])
            for reason, n in r["probe"]["retries"].items():
                slot["retries_per_1000_txn"][reason].append(round(1000 * n / txns, 1))
    return {key: {part: {k: statistics.median(v) for k, v in values.items()}
                  for part, values in slot.items()} for key, slot in out.items()}


def goals(summary: dict, results: list[dict]) -> list[dict]:
    """Each goal's ratio of medians, and the same ratio within each round (side by side)."""
    out: list[dict] = []
    for name, top, bottom, least in GOALS:
        a, b = median(summary, *top), median(summary, *bottom)
        if a is None or b is None:
            out.append({"goal": name, "ratio": None, "met": None})
            continue
        per_round = _per_round(results, top, bottom)
        out.append({"goal": name, "ratio": round(a / b, 2), "met": a / b >= least,
                    "per_round": per_round})
    return out + verdicts.goals(lambda s, v, m, p=None: median(summary, s, v, m, p, 3))


def _per_round(results: list[dict], top: tuple[str, str, str],
               bottom: tuple[str, str, str]) -> list[float]:
    def value(scenario: str, variant: str, metric: str, round_no: int) -> float | None:
        return next((r.get(metric) for r in results if r.get("ok")
                     and r.get("scenario") == scenario and r["variant"] == variant
                     and r["round"] == round_no), None)
    ratios = []
    for round_no in sorted({r["round"] for r in results if "round" in r}):
        a, b = value(*top, round_no), value(*bottom, round_no)
        if a and b:
            ratios.append(round(a / b, 2))
    return ratios


def write(directory: Path, info: dict, results: list[dict]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    summary = summarise(results)
    doc = {**headline(summary, results), "goals": goals(summary, results),
           "probe": probe_findings(results), "info": info,
           "summary": [{"scenario": s, "partitions": p, "variant": v, **metrics}
                       for (s, p, v), metrics in summary.items()],
           "discarded": [r for r in results if not r.get("ok")], "runs": results}
    paths = []
    # latest.* is the last run of either mode; <mode>.* keeps each mode's last run.
    for stem in ("latest", info["mode"]):
        paths += [directory / f"{stem}.json", directory / f"{stem}.md"]
        paths[-2].write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2
                                           | orjson.OPT_NON_STR_KEYS))
        paths[-1].write_text(markdown(doc, f"{stem}.png"))
        error = draw(doc, summary, directory / f"{stem}.png")
        if error is None:
            paths.append(directory / f"{stem}.png")
        else:
            print(f"bench: no chart: {error}")
    return paths


def markdown(doc: dict, chart: str) -> str:
    info = doc["info"]
    lines = [f"Benchmark `{info['mode']}`, {info['started']}, {info['runs']} runs per variant "
             f"(median, min-max). Machine: {info['machine']['nproc']} cores, "
             f"{info['machine']['memory_gb']} GB, {info['machine']['cpu']}; "
             f"Kafka {info['machine']['kafka']}, one local broker. Load average at start: "
             f"{info['machine']['loadavg_at_start'][0]:.1f} (per run: latest.json).",
             *([f"Note: {info['note']}"] if info.get("note") else []),
             *([f"Merged: scenarios {', '.join(info['merged']['scenarios'])} from the run "
                f"started {info['merged']['from']}; the rest from this one."]
               if info.get("merged") else []),
             "", "Sizes: " + ", ".join(f"{k} {v}" for k, v in info.get("sizes", {}).items()
                                       if info["mode"] == "all" or k in QUICK_SIZES)
             + ". Rates: steady state, between 10% and 90% of the records committed.", "",
             "| scenario | partitions | variant | files/s | output msgs/s | peak RSS MB "
             "| cores: process / broker / file server | assignment to first commit s "
             "| retry sleep ms/txn |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in doc["summary"]:
        lines.append(f"| {row['scenario']} | {row['partitions']} | {row['variant']} | "
                     f"{_cell(row, 'files_per_s')} | {_cell(row, 'msgs_per_s', 0)} | "
                     f"{_cell(row, 'peak_rss_mb', 0)} | {_cores(row)} | "
                     f"{_cell(row, 'first_commit_s', 2)} | "
                     f"{_cell(row, 'retry_wait_ms_per_txn', 1)} |")
    lines += ["", "| goal | ratio of medians | ratio in each round | met |", "|---|---|---|---|"]
    lines += [f"| {g['goal']} | {g['ratio'] if g['ratio'] is not None else '-'}"
              f"{f' ({d})' if (d := g.get('detail')) else ''} | "
              f"{', '.join(map(str, g.get('per_round', []))) or '-'} | "
              f"{ {True: 'yes', False: 'NO', None: 'not run'}[g['met']] } |"
              for g in doc["goals"]]
    lines += verdicts.tables(doc["summary"])
    if info.get("peer_error"):
        lines += ["", f"Peer missing: {info['peer_error']}"]
    if info.get("kstreams_error"):
        lines += ["", f"Kafka Streams peer missing: {info['kstreams_error']}"]
    if doc["discarded"]:
        lines += ["", f"Discarded runs (failed the gate or errored): {len(doc['discarded'])}"]
        lines += [f"- {r.get('scenario')} {r['variant']} round {r['round']}: "
                  f"{r.get('error') or r.get('gate')}" for r in doc["discarded"]]
    lines += ["", f"![benchmark chart]({chart})"]
    return "\n".join(lines) + "\n"


def _cell(row: dict, metric: str, digits: int = 1) -> str:
    if metric not in row:
        return "-"
    s = row[metric]
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def _cores(row: dict) -> str:
    parts = [f"{row[k]['median']:.2f}" if k in row else "-"
             for k in ("cores_child", "cores_broker", "cores_runner")]
    return " / ".join(parts)
