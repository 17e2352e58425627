"""Scenario TXN's pure parts (bench/txn_scenario.py, bench/txn_loop.py): the figures
from each commit's time, the client's RESULT line, the plan and the verdict. No
Kafka; the loop itself runs in tests/integration/test_txn_loop.py."""

from __future__ import annotations

import argparse

import pytest
from aiokafka import AIOKafkaProducer

from app.kafka.protocol.producer import TransactionalProducer
from bench import report, txn_scenario, verdicts
from bench.plan import plan
from bench.txn_loop import producer_class
from bench.txn_scenario import committed_times, figures


def test_the_steady_rate_runs_from_the_10_to_the_90_percent_transaction():
    # 100 transactions: the first 10 slow (start-up), then one every 10 ms.
    committed_at = [0.5 * (i + 1) for i in range(10)] + [5.0 + 0.01 * i for i in range(90)]
    got = figures(committed_at)
    assert got["files_per_s"] == pytest.approx(100.0)   # transactions 10 to 89
    assert got["msgs_per_s"] == pytest.approx(300.0)
    assert got["p50_ms"] == pytest.approx(10.0)
    assert got["p99_ms"] == pytest.approx(500.0)
    assert got["self_timed_txn_per_s"] == pytest.approx(100 / 5.89)


def test_too_few_transactions_or_no_time_give_no_figures():
    assert figures([1.0]) == {}
    assert figures([1.0] * 50) == {}


def test_the_client_s_last_result_line_is_read_and_its_absence_is_none():
    output = "log line\nRESULT {\"client\":\"java\",\"committed_at_s\":[0.1,0.25]}\n"
    assert committed_times(output) == [0.1, 0.25]
    assert committed_times("Exception in thread main\n") is None


def test_the_producer_is_found_by_its_dotted_path_and_a_bad_path_is_refused():
    assert producer_class("aiokafka.AIOKafkaProducer") is AIOKafkaProducer
    assert producer_class(txn_scenario.NEW_LAYER) is TransactionalProducer
    for bad in ("AIOKafkaProducer", "aiokafka.NoSuchProducer", "aiokafka.__version__"):
        with pytest.raises(SystemExit, match="txn_loop"):
            producer_class(bad)


def test_make_bench_runs_the_three_clients_with_the_tuned_backoff():
    args = argparse.Namespace(quick=False, all=True, s1_files=10, naive_files=10, s2_files=1,
                              s3_files=1, sweep_files=1, s4_delay_ms=50, txn_transactions=500,
                              txn_producer="some.module.V2Producer", add=[], variants="",
                              profile="")
    specs, variants = plan(args)["TXN"]
    assert [s.files for s in specs] == [500]
    assert [v.name for v in variants] == ["txn_java", "txn_aiokafka", "txn_new_layer"]
    assert variants[2].cfg["producer"] == "some.module.V2Producer"
    assert {v.cfg["retry_backoff_ms"] for v in variants} == {5}


def _run(variant: str, rate: float, round_no: int) -> dict:
    return {"scenario": "TXN", "partitions": 1, "variant": variant, "round": round_no,
            "ok": True, "files": 100, "files_per_s": rate, "p50_ms": 3.0, "p99_ms": 9.0}


def test_the_verdict_is_the_new_layer_over_the_java_client_within_each_round():
    runs = [_run("txn_java", 300.0, 0), _run("txn_new_layer", 330.0, 0),
            _run("txn_java", 200.0, 1), _run("txn_new_layer", 190.0, 1)]
    summary = report.summarise(runs)
    goal = next(g for g in report.goals(summary, runs) if g["goal"].startswith("TXN"))
    assert goal["ratio"] == pytest.approx(260 / 250, abs=0.01)
    assert goal["met"] is True
    assert goal["per_round"] == [1.1, 0.95]
    rows = [{"scenario": s, "partitions": p, "variant": v, **m}
            for (s, p, v), m in summary.items()]
    table = "\n".join(verdicts.tables(rows))
    assert "| txn_new_layer | 260.0 (190.0-330.0) | 1.04 |" in table
