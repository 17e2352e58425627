"""The chaos run end to end, in its short ``smoke`` tier against the test session's
broker (kills, SIGTERMs, scaling 1 -> 3 -> 2, 503 bursts, aborts; no broker
restarts): the broken copier must be caught, and the service must pass.

``make chaos`` (and ``make chaos-broken``) are the real runs, with their own broker.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def chaos_run(bootstrap: str, report: Path, *args: str) -> tuple[int, str, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "chaos.run", "--tier", "smoke", "--bootstrap", bootstrap,
         "--report", str(report), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    print(proc.stdout[-4000:])
    return proc.returncode, lines[-1], json.loads(report.read_text())


@pytest.mark.kafka
def test_the_checker_catches_a_copier_that_commits_offsets_outside_its_transactions(
        kafka_bootstrap, tmp_path):
    code, last, report = chaos_run(kafka_bootstrap, tmp_path / "broken.json",
                                   "--copier", "broken", "--seed", "3")
    assert last.startswith("chaos: FAIL inputs="), last
    assert code == 0, "--copier broken exits 0 when the checker says FAIL"
    assert report["verdict"] == "FAIL" and report["counts"]["inputs"] >= 300
    assert report["counts"]["duplicates"] + report["counts"]["lost"] > 0, report["counts"]


@pytest.mark.kafka
def test_the_service_passes_the_smoke_tier(kafka_bootstrap, tmp_path):
    before = time.time()
    code, last, report = chaos_run(kafka_bootstrap, tmp_path / "service.json", "--seed", "4")
    assert last.startswith("chaos: PASS inputs="), (last, report["failures"])
    assert code == 0
    started = datetime.datetime.fromisoformat(report["started_at"]).timestamp()
    # The run lasts longer than 10 s (it feeds for 15): the time it reported is later.
    assert before - 1 <= started <= before + 10, "started_at: when the run began"
    counts = report["counts"]
    assert counts["inputs"] > 300 and counts["repeats"] > 0, "300 files, some published again"
    faults = report["faults"]
    assert faults["kills"] >= 3 and faults["terms"] >= 1 and faults["scale_up"] == 1
    assert report["counts"]["aborted_attempts"] > 0
