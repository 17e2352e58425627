"""The rules of the issue-15 goals that are not a plain ratio of two medians (those are
``report.GOALS``): S4's latency against the download time, S3's CPU per transaction
across partition counts, S2's CPU per output record. Pure functions, no I/O:
tests/unit/test_bench_verdicts.py.
"""

from __future__ import annotations

import math
import statistics

S4_DOWNLOADS = 2.0  # p99 latency under this many median download times...
S4_SLACK_MS = 100.0  # ...plus this
S3_CPU_SPREAD = 0.20  # CPU per transaction: the largest at most 20% above the smallest
S2_CPU_US = 8.0  # the service's CPU per output record in S2, at most


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least q% of the values at
    or below it (p100 is the maximum; no interpolation, so it is always a value seen)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is outside (0, 100]")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def latency_summary(latencies_ms: list[float]) -> dict:
    """p50, p99 and max of one run's per-input latencies, in ms."""
    return {"n": len(latencies_ms), "p50_ms": round(percentile(latencies_ms, 50), 1),
            "p99_ms": round(percentile(latencies_ms, 99), 1),
            "max_ms": round(max(latencies_ms), 1)}


def s4_bound_ms(median_download_ms: float) -> float:
    return S4_DOWNLOADS * median_download_ms + S4_SLACK_MS


def s4_goal(mode: str, p99_ms: float | None, median_download_ms: float | None) -> dict:
    """S4: p99 latency < 2 x median download time + 100 ms, for one mode (variant)."""
    name = f"S4 {mode}: p99 latency < {S4_DOWNLOADS:g} x median download + {S4_SLACK_MS:g} ms"
    if p99_ms is None or median_download_ms is None:
        return {"goal": name, "ratio": None, "met": None}
    bound = s4_bound_ms(median_download_ms)
    return {"goal": name, "ratio": round(p99_ms / bound, 2), "met": p99_ms < bound,
            "detail": f"p99 {p99_ms:.0f} ms, bound {bound:.0f} ms"}


def s3_cpu_goal(cpu_ms_per_txn: dict[int, float | None]) -> dict:
    """S3: CPU per transaction within 20% across the partition counts (largest over
    smallest, so the verdict does not depend on which count comes first)."""
    name = (f"S3 service CPU per transaction within {100 * S3_CPU_SPREAD:.0f}% across "
            f"{' / '.join(map(str, sorted(cpu_ms_per_txn)))} partitions")
    values = [v for v in cpu_ms_per_txn.values() if v]
    if len(values) < 2 or len(values) < len(cpu_ms_per_txn):
        return {"goal": name, "ratio": None, "met": None}
    spread = max(values) / min(values)
    return {"goal": name, "ratio": round(spread, 2), "met": spread <= 1 + S3_CPU_SPREAD,
            "detail": "largest / smallest: " + ", ".join(
                f"{p}p {v:.2f} ms" for p, v in sorted(cpu_ms_per_txn.items()) if v)}


def cpu_ms_per_txn(cores: float | None, txn_per_s: float | None) -> float | None:
    """A process's CPU per transaction in the steady window: cores kept busy over the
    rate (CPU seconds per second over transactions per second)."""
    if cores is None or not txn_per_s:
        return None
    return 1000 * cores / txn_per_s


def cpu_us_per_msg(cores: float | None, msgs_per_s: float | None) -> float | None:
    """A process's CPU per output record in the steady window, in microseconds."""
    ms = cpu_ms_per_txn(cores, msgs_per_s)  # the same quotient, per record
    return None if ms is None else 1000 * ms


def s2_cpu_goal(us_per_msg: float | None) -> dict:
    """S2: the service's own CPU per output record at most 8 us."""
    name = f"S2 service CPU per output record <= {S2_CPU_US:g} us"
    if us_per_msg is None:
        return {"goal": name, "ratio": None, "met": None}
    return {"goal": name, "ratio": round(us_per_msg / S2_CPU_US, 2),
            "met": us_per_msg <= S2_CPU_US, "detail": f"{us_per_msg:.1f} us per record"}


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def goals(median) -> list[dict]:
    """S3's and S4's verdicts; ``median(scenario, variant, metric, partitions=None)`` is
    the median over a variant's runs that passed the gate, or None."""
    # The whole run's CPU (start-up included): the steady window would leave out the
    # files prefetched before it, more of them with more partitions (8 per partition).
    s3 = {p: median("S3", "service", "cpu_ms_per_txn_run", p) for p in (8, 32, 128)}
    out = [s3_cpu_goal(s3)] if any(s3.values()) else []
    s2 = median("S2", "service", "cpu_us_per_msg")
    if s2 is not None:
        out.append(s2_cpu_goal(s2))
    for mode in ("service", "service_n32"):
        p99 = median("S4", mode, "p99_ms")
        if p99 is not None:
            out.append(s4_goal(mode, p99, median("S4", mode, "download_median_ms")))
    return out


def tables(rows: list[dict]) -> list[str]:
    """Markdown rows for S4's latencies, TXN's clients and S3's costs, from latest.json's
    summary rows (scenario, partitions, variant, then each metric's stats)."""
    def cell(metrics: dict, name: str, digits: int) -> str:
        s = metrics.get(name)
        return "-" if s is None else (f"{s['median']:.{digits}f} "
                                      f"({s['min']:.{digits}f}-{s['max']:.{digits}f})")
    lines: list[str] = []
    s4 = [(r["variant"], r) for r in rows if r["scenario"] == "S4"]
    if s4:
        lines += ["", "S4 latency, input append to outputs visible (read_committed), ms:", "",
                  "| variant | offered files/s | p50 | p99 | max | median download ms |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {v} | {cell(m, 'offered_per_s', 1)} | {cell(m, 'p50_ms', 0)} | "
                  f"{cell(m, 'p99_ms', 0)} | {cell(m, 'max_ms', 0)} | "
                  f"{cell(m, 'download_median_ms', 1)} |" for v, m in s4]
    lines += _txn_table(rows, cell)
    s3 = [(r["partitions"], r["variant"], r) for r in sorted(
        (r for r in rows if r["scenario"] == "S3"), key=lambda r: r["partitions"])]
    if s3:
        lines += ["", "S3 costs (the process's CPU per transaction: over the whole run, start-up "
                  "included (the goal's); over the steady window):", "",
                  "| partitions | variant | CPU ms/txn, whole run | CPU ms/txn, window "
                  "| assignment to first commit s | to every partition's first commit s |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {p} | {v} | {cell(m, 'cpu_ms_per_txn_run', 2)} | "
                  f"{cell(m, 'cpu_ms_per_txn', 2)} | {cell(m, 'first_commit_s', 2)} | "
                  f"{cell(m, 'every_partition_committed_s', 2)} |" for p, v, m in s3]
    return lines


def _txn_table(rows: list[dict], cell) -> list[str]:
    """TXN (bench/txn_scenario.py): each client's transactions/s, its ratio to Kafka's
    Java client, and its transactions' p50 and p99."""
    txn = {r["variant"]: r for r in rows if r["scenario"] == "TXN"}
    if not txn:
        return []
    java = txn.get("txn_java", {}).get("files_per_s", {}).get("median")
    lines = ["", "TXN, one producer's sequential per-record transactions (begin, 3 records, "
             "one offset, commit):", "",
             "| client | txn/s | / Java client | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for name, m in txn.items():
        rate = m.get("files_per_s", {}).get("median")
        ratio = f"{rate / java:.2f}" if rate and java else "-"
        lines.append(f"| {name} | {cell(m, 'files_per_s', 1)} | {ratio} | "
                     f"{cell(m, 'p50_ms', 1)} | {cell(m, 'p99_ms', 1)} |")
    return lines
