"""The benchmark's issue-15 rules: percentiles, S4's latency from append to visible,
S4's rate, S3's CPU-per-transaction verdict and the new ratio goals (pure logic)."""

import pytest

from bench import latency, report, verdicts
from bench.workload import Spec


def test_percentile_is_the_nearest_rank_value():
    values = list(range(100, 0, -1))  # 1..100, unsorted
    assert verdicts.percentile(values, 50) == 50
    assert verdicts.percentile(values, 99) == 99
    assert verdicts.percentile(values, 100) == 100
    assert verdicts.percentile([7.0], 99) == 7.0
    # Of 10 values, p99 is the largest: 9 values are only 90%.
    assert verdicts.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 1000], 99) == 1000
    assert verdicts.percentile([1, 2, 3, 4], 50) == 2
    with pytest.raises(ValueError):
        verdicts.percentile([], 50)
    with pytest.raises(ValueError):
        verdicts.percentile([1.0], 0)


def test_latency_summary_in_ms():
    got = verdicts.latency_summary([float(v) for v in range(1, 201)])
    assert got == {"n": 200, "p50_ms": 100.0, "p99_ms": 198.0, "max_ms": 200.0}


def test_s4_goal_is_p99_strictly_under_two_downloads_plus_100_ms():
    assert verdicts.s4_bound_ms(60.0) == 220.0
    assert verdicts.s4_goal("service", 219.9, 60.0)["met"] is True
    assert verdicts.s4_goal("service", 220.0, 60.0)["met"] is False
    over = verdicts.s4_goal("service_n32", 440.0, 60.0)
    assert over["met"] is False and over["ratio"] == 2.0 and "service_n32" in over["goal"]
    assert verdicts.s4_goal("service", None, 60.0)["met"] is None
    assert verdicts.s4_goal("service", 100.0, None)["met"] is None


def test_s3_goal_compares_largest_and_smallest_cpu_per_transaction():
    assert verdicts.s3_cpu_goal({8: 2.0, 32: 2.4, 128: 2.2})["met"] is True
    far = verdicts.s3_cpu_goal({8: 2.6, 32: 2.0, 128: 2.3})  # largest first: still 1.3
    assert far["met"] is False and far["ratio"] == 1.3
    assert verdicts.s3_cpu_goal({8: 2.0, 32: 2.41, 128: 2.0})["met"] is False
    assert verdicts.s3_cpu_goal({8: 2.0, 32: None, 128: 2.0})["met"] is None


def test_cpu_per_transaction_is_cores_over_rate():
    assert verdicts.cpu_ms_per_txn(0.76, 287.0) == pytest.approx(2.648, abs=1e-3)
    assert verdicts.cpu_ms_per_txn(None, 287.0) is None
    assert verdicts.cpu_ms_per_txn(0.5, 0.0) is None


def s1_run(rate: float, ok: bool = True, variant: str = "service") -> dict:
    return {"scenario": "S1", "variant": variant, "ok": ok, "files_per_s": rate}


def test_s4_rate_is_half_the_service_s1_median_unless_given():
    spec = Spec(files=0, partitions=8, latency_ms=50)
    runs = [s1_run(300.0), s1_run(280.0), s1_run(290.0), s1_run(900.0, ok=False),
            s1_run(1000.0, variant="upper_bound")]
    got, source = latency.load_spec(spec, runs, None, 60)
    assert (got.rate, got.files, got.latency_ms) == (145.0, 8700, 50)
    assert "S1" in source
    given, source = latency.load_spec(spec, runs, 40.0, 10)
    assert (given.rate, given.files, source) == (40.0, 400, "--s4-rate")
    with pytest.raises(SystemExit):
        latency.load_spec(spec, [s1_run(300.0, variant="r2")], None, 60)


def headers(partition: int, offset: int, index: int, count: int) -> dict[str, bytes]:
    return {"source-partition": str(partition).encode(), "source-offset": str(offset).encode(),
            "index": str(index).encode(), "count": str(count).encode()}


def test_an_input_is_visible_when_its_last_output_is_read():
    tail = latency.Tail.__new__(latency.Tail)
    tail.outputs, tail.visible = {}, {}
    tail.seen(headers(1, 0, 0, 3), now=10.0)
    tail.seen(headers(1, 0, 1, 3), now=10.1)
    tail.seen(headers(2, 5, 0, 1), now=10.2)
    assert tail.visible == {(2, 5): 10.2}
    tail.seen(headers(1, 0, 2, 3), now=10.3)
    assert tail.visible == {(2, 5): 10.2, (1, 0): 10.3}


def test_figures_measure_from_append_to_visible():
    appended = {(0, 0): 100.0, (1, 0): 100.5, (0, 1): 101.0}
    visible = {(0, 0): 100.2, (1, 0): 100.6, (0, 1): 101.5}
    got = latency.figures(appended, visible, [0.05, 0.06, 0.07], 1.5, {"child": 0.3})
    assert got["complete"] is True
    assert (got["p50_ms"], got["max_ms"], got["download_median_ms"]) == (200.0, 500.0, 60.0)
    assert got["files_per_s"] == pytest.approx(3 / 1.5)
    partial = latency.figures(appended, {(0, 0): 100.2}, [], 1.5, {})
    assert partial["complete"] is False and partial["visible_inputs"] == 1


def summary_of(**medians: float) -> dict:
    """(scenario, partitions, variant) -> metric -> stats, from "S1__variant__metric"."""
    out: dict = {}
    for key, value in medians.items():
        scenario, variant, metric = key.split("__")
        out.setdefault((scenario, 8, variant), {})[metric] = {"median": value}
    return out


def verdict(goals: list[dict], starts: str) -> bool | None:
    (found,) = [g["met"] for g in goals if g["goal"].startswith(starts)]
    return found


def test_s1_goals_for_group_commit_dedup_and_the_r2_ceiling():
    summary = summary_of(S1__service__files_per_s=360.0, S1__r2__files_per_s=400.0,
                         S1__service_n32__files_per_s=600.0,
                         S1__upper_bound__files_per_s=590.0,
                         S1__service_dedup__files_per_s=330.0,
                         S1__r2_committer__files_per_s=450.0)
    goals = report.goals(summary, [])
    assert verdict(goals, "S1 service txn/s >= 0.9x R2") is True
    assert verdict(goals, "S1 service txn/s >= 0.9x r2_committer") is False
    assert verdict(goals, "S1 service N=32") is True
    assert verdict(goals, "S1 DEDUP=url") is True
    summary = summary_of(S1__service__files_per_s=350.0, S1__r2__files_per_s=400.0,
                         S1__service_n32__files_per_s=580.0,
                         S1__upper_bound__files_per_s=590.0,
                         S1__service_dedup__files_per_s=310.0)
    goals = report.goals(summary, [])
    assert verdict(goals, "S1 service txn/s >= 0.9x R2") is False
    assert verdict(goals, "S1 service N=32") is False
    assert verdict(goals, "S1 DEDUP=url") is False


def test_s3_and_s4_verdicts_come_from_the_summary():
    summary = summary_of(S4__service__p99_ms=150.0, S4__service__download_median_ms=52.0,
                         S4__service_n32__p99_ms=260.0,
                         S4__service_n32__download_median_ms=52.0)
    for p, cpu in ((8, 2.0), (32, 2.1), (128, 2.3)):
        summary[("S3", p, "service")] = {"cpu_ms_per_txn_run": {"median": cpu},
                                         "cpu_ms_per_txn": {"median": cpu * p}}
    goals = report.goals(summary, [])
    assert verdict(goals, "S3 service CPU per transaction") is True
    assert verdict(goals, "S4 service:") is True
    assert verdict(goals, "S4 service_n32:") is False
    assert not [g for g in goals if "linear" in g["goal"]]


def test_the_tables_list_s4_and_s3_rows():
    stat = {"median": 1.0, "min": 1.0, "max": 1.0}
    rows = [{"scenario": "S4", "partitions": 8, "variant": "service_n32", "p99_ms": stat},
            {"scenario": "S3", "partitions": 128, "variant": "service",
             "cpu_ms_per_txn_run": stat},
            {"scenario": "S3", "partitions": 8, "variant": "service",
             "cpu_ms_per_txn_run": stat}]
    lines = verdicts.tables(rows)
    s3 = [line for line in lines if line.startswith("| 8 ") or line.startswith("| 128 ")]
    assert s3[0].startswith("| 8 ") and s3[1].startswith("| 128 | service | 1.00 (1.00-1.00) |")
    assert any(line.startswith("| service_n32 | - | - | 1 (1-1) |") for line in lines)


def test_all_runs_group_commit_and_dedup_in_s1_and_quick_stays_short():
    from bench import run
    chosen = run.plan(run.arguments(["--all"]))
    names = [v.name for v in chosen["S1"][1]]
    assert names[:5] == ["service", "service_n8", "service_n32", "service_n128",
                         "service_dedup"]
    n128 = next(v for v in chosen["S1"][1] if v.name == "service_n128")
    assert n128.env == {"TRANSACTION_MAX_RECORDS": "128", "PREFETCH_PER_PARTITION": "128"}
    r2_committer = next(v for v in chosen["S1"][1] if v.name == "r2_committer")
    assert r2_committer.cfg["committer"] is True and "r2" in names
    assert [v.name for v in chosen["S4"][1]] == ["service", "service_n32"]
    assert chosen["S4"][0][0].latency_ms == 50
    quick = run.plan(run.arguments(["--quick"]))
    assert list(quick) == ["S1"] and [v.name for v in quick["S1"][1]] == [
        "service", "naive", "r2"]


def test_summary_derives_cpu_per_transaction_from_a_run():
    run = {"scenario": "S3", "partitions": 32, "variant": "service", "ok": True,
           "files": 6000, "cpu_s": 15.0, "files_per_s": 300.0, "cores": {"child": 0.6}}
    (metrics,) = report.summarise([run]).values()
    assert metrics["cpu_ms_per_txn_run"]["median"] == pytest.approx(2.5)
    assert metrics["cpu_ms_per_txn"]["median"] == pytest.approx(2.0)


def test_p99_by_period_shows_where_the_tail_is():
    appended = {(0, i): 100.0 + i for i in range(25)}  # one input a second
    visible = {k: t + (0.9 if k[1] < 10 else 0.1) for k, t in appended.items()}
    got = latency.figures(appended, visible, [], 25.0, {})
    assert got["p99_ms_by_10s"] == pytest.approx([900.0, 100.0, 100.0])


def test_s2_goal_is_at_most_8_us_of_service_cpu_per_record_from_the_summary():
    assert verdicts.cpu_us_per_msg(0.91, 117_091.0) == pytest.approx(7.77, abs=0.01)
    assert verdicts.cpu_us_per_msg(None, 117_091.0) is None
    assert verdicts.s2_cpu_goal(8.0)["met"] is True
    assert verdicts.s2_cpu_goal(8.01)["met"] is False
    assert verdicts.s2_cpu_goal(None)["met"] is None
    run = {"scenario": "S2", "partitions": 4, "variant": "service", "ok": True,
           "msgs_per_s": 100_000.0, "cores": {"child": 0.9}}
    summary = report.summarise([run])
    assert verdict(report.goals(summary, [run]), "S2 service CPU per output record") is False
    run["cores"]["child"] = 0.7
    summary = report.summarise([run])
    assert verdict(report.goals(summary, [run]), "S2 service CPU per output record") is True
