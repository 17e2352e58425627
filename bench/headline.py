"""latest.json's fixed shape: per scenario, the medians a reader looks for first."""

from __future__ import annotations


def median(summary: dict, scenario: str, variant: str, metric: str,
           partitions: int | None = None, digits: int = 1) -> float | None:
    """The median of ``metric`` for one variant (of the given partition count, or any)."""
    for (s, p, v), metrics in summary.items():
        if s == scenario and v == variant and (partitions is None or p == partitions):
            return round(metrics[metric]["median"], digits) if metric in metrics else None
    return None


def headline(summary: dict, results: list[dict]) -> dict:
    """The fixed shape of latest.json's S1, S2, R2's backoff sweep, S3 and S4."""
    ran = {r.get("scenario") for r in results}
    out: dict = {}
    if "S1" in ran:
        out["S1"] = _s1(summary, [r for r in results if r.get("scenario") == "S1"])
    if "S2" in ran:
        out["S2"] = _s2(summary)
    if "R2" in ran:
        out["R2_retry_backoff"] = _r2_backoff(summary, results)
    s3 = sorted({p for (s, p, _v) in summary if s == "S3"})
    if s3:
        out["S3"] = _s3(summary, s3)
    if "S4" in ran:
        out["S4"] = {"partitions": 8, **{v: {k: median(summary, "S4", v, k) for k in (
            "offered_per_s", "p50_ms", "p99_ms", "max_ms", "download_median_ms")}
            for v in ("service", "service_n32")}}
    return out


def _s1(summary: dict, s1: list[dict]) -> dict:
    def m(variant: str, metric: str = "files_per_s") -> float | None:
        return median(summary, "S1", variant, metric)

    return {
        "partitions": 8, "latency_ms": 50,
        "files": max((r.get("files", 0) for r in s1 if r["variant"] == "service"),
                     default=None),
        "naive_files": next((r["files"] for r in s1 if r["variant"] == "naive"
                             and "files" in r), None),
        "service_files_per_s": m("service"),
        "service_txn_per_s": m("service"),
        "naive_files_per_s": m("naive"),
        "upper_bound_files_per_s": m("upper_bound"),
        "ceiling_txn_per_s": m("r2"),
        "kstreams_files_per_s": m("kstreams"),
        "peak_rss_mb": m("service", "peak_rss_mb"),
        "group_commit_files_per_s": {n: m(f"service_n{n}") for n in (8, 32, 128)},
        "dedup_files_per_s": m("service_dedup"),
    }


def _s2(summary: dict) -> dict:
    def m(variant: str, metric: str = "msgs_per_s") -> float | None:
        return median(summary, "S2", variant, metric)

    return {
        "partitions": 4,
        "service_msgs_per_s": m("service"),
        "upper_bound_msgs_per_s": m("upper_bound"),
        "raw_produce_msgs_per_s": m("r1"),
        "peer_msgs_per_s": m("peer"),
        "kstreams_msgs_per_s": m("kstreams"),
        "peak_rss_mb": m("service", "peak_rss_mb"),
        "peer_peak_rss_mb": m("peer", "peak_rss_mb"),
    }


def _r2_backoff(summary: dict, results: list[dict]) -> dict:
    def m(variant: str, metric: str) -> float | None:
        return median(summary, "R2", variant, metric)

    sends_first, offsets_first = (100, 20, 5, 1), (100, 20, 1)
    return {
        "partitions": 8, "files": next(r["files"] for r in results
                                       if r.get("scenario") == "R2" and "files" in r),
        "sends_first_txn_per_s": {ms: m(f"r2_backoff_{ms}", "files_per_s")
                                  for ms in sends_first},
        "offsets_first_txn_per_s": {ms: m(f"r2_offsets_first_backoff_{ms}", "files_per_s")
                                    for ms in offsets_first},
        # Measured: the producer's sleeps on CONCURRENT_TRANSACTIONS (and other) retries.
        "sends_first_retry_wait_ms_per_txn": {
            ms: m(f"r2_backoff_{ms}", "retry_wait_ms_per_txn") for ms in sends_first},
        "offsets_first_retry_wait_ms_per_txn": {
            ms: m(f"r2_offsets_first_backoff_{ms}", "retry_wait_ms_per_txn")
            for ms in offsets_first},
    }


def _s3(summary: dict, partitions: list[int]) -> dict:
    def each(variant: str, metric: str, digits: int = 1) -> list[float | None]:
        return [median(summary, "S3", variant, metric, p, digits) for p in partitions]

    return {
        "partitions": partitions,
        "txn_per_s": each("service", "files_per_s"),
        "first_commit_s": each("service", "first_commit_s"),
        "every_partition_committed_s": each("service", "every_partition_committed_s"),
        "ceiling_txn_per_s": each("r2", "files_per_s"),
        "peak_rss_mb": each("service", "peak_rss_mb"),
        "cpu_ms_per_txn": each("service", "cpu_ms_per_txn_run", 3),
        "cpu_ms_per_txn_window": each("service", "cpu_ms_per_txn", 3),
    }
