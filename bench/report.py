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
    # Kafka Streams (bench/kstreams.py): one stream thread in S2, one per partition in S1.
    ("S2 service msgs/s >= 1.0x Kafka Streams", ("S2", "service", "msgs_per_s"),
     ("S2", "kstreams", "msgs_per_s"), 1.0),
    ("S1 service files/s >= 3x Kafka Streams", ("S1", "service", "files_per_s"),
     ("S1", "kstreams", "files_per_s"), 3.0),
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


def _median(summary: dict, scenario: str, variant: str, metric: str,
            partitions: int | None = None, digits: int = 1) -> float | None:
    for (s, p, v), metrics in summary.items():
        if s == scenario and v == variant and (partitions is None or p == partitions):
            return round(metrics[metric]["median"], digits) if metric in metrics else None
    return None


def headline(summary: dict, results: list[dict]) -> dict:
    """The fixed shape of latest.json's S1, S2 and S3."""
    def m(scenario: str, variant: str, metric: str, partitions: int | None = None):
        return _median(summary, scenario, variant, metric, partitions)

    out: dict = {}
    s1 = [r for r in results if r.get("scenario") == "S1"]
    if s1:
        out["S1"] = {
            "partitions": 8, "latency_ms": 50,
            "files": max((r.get("files", 0) for r in s1 if r["variant"] == "service"),
                         default=None),
            "naive_files": next((r["files"] for r in s1 if r["variant"] == "naive"
                                 and "files" in r), None),
            "service_files_per_s": m("S1", "service", "files_per_s"),
            "service_txn_per_s": m("S1", "service", "files_per_s"),
            "naive_files_per_s": m("S1", "naive", "files_per_s"),
            "upper_bound_files_per_s": m("S1", "upper_bound", "files_per_s"),
            "ceiling_txn_per_s": m("S1", "r2", "files_per_s"),
            "kstreams_files_per_s": m("S1", "kstreams", "files_per_s"),
            "peak_rss_mb": m("S1", "service", "peak_rss_mb"),
            "group_commit_files_per_s": {n: m("S1", f"service_n{n}", "files_per_s")
                                         for n in (8, 32, 128)},
            "dedup_files_per_s": m("S1", "service_dedup", "files_per_s"),
        }
    if any(r.get("scenario") == "S2" for r in results):
        out["S2"] = {
            "partitions": 4,
            "service_msgs_per_s": m("S2", "service", "msgs_per_s"),
            "upper_bound_msgs_per_s": m("S2", "upper_bound", "msgs_per_s"),
            "raw_produce_msgs_per_s": m("S2", "r1", "msgs_per_s"),
            "peer_msgs_per_s": m("S2", "peer", "msgs_per_s"),
            "kstreams_msgs_per_s": m("S2", "kstreams", "msgs_per_s"),
            "peak_rss_mb": m("S2", "service", "peak_rss_mb"),
            "peer_peak_rss_mb": m("S2", "peer", "peak_rss_mb"),
        }
    if any(r.get("scenario") == "R2" for r in results):
        out["R2_retry_backoff"] = {
            "partitions": 8, "files": next(r["files"] for r in results
                                           if r.get("scenario") == "R2" and "files" in r),
            "sends_first_txn_per_s": {ms: m("R2", f"r2_backoff_{ms}", "files_per_s")
                                      for ms in (100, 20, 5, 1)},
            "offsets_first_txn_per_s": {ms: m("R2", f"r2_offsets_first_backoff_{ms}",
                                              "files_per_s") for ms in (100, 20, 1)},
            # Measured: the producer's sleeps on CONCURRENT_TRANSACTIONS (and other) retries.
            "sends_first_retry_wait_ms_per_txn": {
                ms: m("R2", f"r2_backoff_{ms}", "retry_wait_ms_per_txn") for ms in (100, 20, 5, 1)},
            "offsets_first_retry_wait_ms_per_txn": {
                ms: m("R2", f"r2_offsets_first_backoff_{ms}", "retry_wait_ms_per_txn")
                for ms in (100, 20, 1)},
        }
    s3 = sorted({p for (s, p, _v) in summary if s == "S3"})
    if s3:
        out["S3"] = {
            "partitions": s3,
            "txn_per_s": [m("S3", "service", "files_per_s", p) for p in s3],
            "first_commit_s": [m("S3", "service", "first_commit_s", p) for p in s3],
            "every_partition_committed_s": [m("S3", "service", "every_partition_committed_s", p)
                                            for p in s3],
            "ceiling_txn_per_s": [m("S3", "r2", "files_per_s", p) for p in s3],
            "peak_rss_mb": [m("S3", "service", "peak_rss_mb", p) for p in s3],
            "cpu_ms_per_txn": [_median(summary, "S3", "service", "cpu_ms_per_txn_run", p, 3)
                               for p in s3],
            "cpu_ms_per_txn_window": [_median(summary, "S3", "service", "cpu_ms_per_txn", p, 3)
                                      for p in s3],
        }
    if any(r.get("scenario") == "S4" for r in results):
        out["S4"] = {"partitions": 8, **{v: {k: m("S4", v, k) for k in (
            "offered_per_s", "p50_ms", "p99_ms", "max_ms", "download_median_ms")}
            for v in ("service", "service_n32")}}
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
        a, b = _median(summary, *top), _median(summary, *bottom)
        if a is None or b is None:
            out.append({"goal": name, "ratio": None, "met": None})
            continue
        per_round = _per_round(results, top, bottom)
        out.append({"goal": name, "ratio": round(a / b, 2), "met": a / b >= least,
                    "per_round": per_round})
    return out + verdicts.goals(lambda s, v, m, p=None: _median(summary, s, v, m, p, 3))


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


def draw(doc: dict, summary: dict, path: Path) -> str | None:
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed"
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = [p for p in (_s1_panel, _s2_panel, _s3_panel, _sweep_panel) if p(summary, None)]
    if not panels:
        return "nothing to draw"
    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(max(7.0, 6.0 * cols), 4.4 * rows + 0.4),
                             squeeze=False)
    for panel, ax in zip(panels, axes.flat, strict=False):
        panel(summary, ax)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"txingest benchmarks ({doc['info']['mode']}, {doc['info']['started']}, "
                 f"{doc['info']['machine']['nproc']} cores, shared)\n"
                 "median of the runs that passed the gate; whiskers: min-max", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _bars(ax, summary: dict, scenario: str, names: list[tuple[str, str]], metric: str,
          title: str, ylabel: str) -> bool:
    rows = [(label, summary[key][metric]) for key_variant, label in names
            for key in summary if key[0] == scenario and key[2] == key_variant
            and metric in summary[key]]
    if ax is None or not rows:
        return bool(rows)
    labels = [label for label, _ in rows]
    med = [s["median"] for _, s in rows]
    err = [[s["median"] - s["min"] for _, s in rows], [s["max"] - s["median"] for _, s in rows]]
    ax.bar(labels, med, yerr=err, capsize=4, color="#4c72b0")
    for i, v in enumerate(med):
        ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelsize=8, rotation=20)
    return True


def _s1_panel(summary: dict, ax) -> bool:
    names = [("naive", "naive"), ("service", "service"), ("service_n8", "N=8"),
             ("service_n32", "N=32"), ("service_n128", "N=128"), ("service_dedup", "DEDUP=url"),
             ("service_probe", "service\n(instrumented)"), ("upper_bound", "U (at least once)"),
             ("r2", "R2 ceiling"), ("kstreams", "Kafka Streams EOS")]
    return _bars(ax, summary, "S1", names, "files_per_s",
                 "S1: small files, 50 ms, 8 partitions",
                 "files / s (one transaction each but N=...)")


def _s2_panel(summary: dict, ax) -> bool:
    names = [("service", "service"), ("upper_bound", "U (at least once)"),
             ("r1", "R1 raw produce"), ("peer", "Quix Streams EOS"),
             ("proposed", "service + proposed"), ("kstreams", "Kafka Streams EOS")]
    return _bars(ax, summary, "S2", names, "msgs_per_s", "S2: 2-5 MB files, 4 partitions",
                 "output messages / s")


def _sweep_panel(summary: dict, ax) -> bool:
    names = ([(f"r2_backoff_{ms}", f"{ms} ms") for ms in (100, 20, 5, 1)]
             + [(f"r2_offsets_first_backoff_{ms}", f"offsets 1st\n{ms} ms") for ms in (100, 20, 1)])
    return _bars(ax, summary, "R2", names, "files_per_s",
                 "R2 by retry_backoff_ms (8 partitions)", "transactions / s")


def _s3_panel(summary: dict, ax) -> bool:
    points = {v: sorted((k[1], m["files_per_s"]) for k, m in summary.items()
                        if k[0] == "S3" and k[2] == v and "files_per_s" in m)
              for v in ("service", "r2")}
    if ax is None or not points["service"]:
        return bool(points["service"])
    for variant, label in (("service", "service"), ("r2", "R2 ceiling")):
        if points[variant]:
            xs = [p for p, _ in points[variant]]
            ax.errorbar(xs, [s["median"] for _, s in points[variant]],
                        yerr=[[s["median"] - s["min"] for _, s in points[variant]],
                              [s["max"] - s["median"] for _, s in points[variant]]],
                        marker="o", capsize=4, label=label)
    xs = [p for p, _ in points["service"]]
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_title("S3: small files, 10 ms, by partitions", fontsize=10)
    ax.set_xlabel("partitions")
    ax.set_ylabel("transactions / s")
    ax.legend(fontsize=8)
    return True
