"""`make demo`'s script, run against the test broker: it must finish and say YES."""

from __future__ import annotations

import subprocess
import sys

from tests.integration.harness import ROOT


def test_demo_runs_end_to_end_and_verifies_exactly_once(kafka_bootstrap):
    result = subprocess.run(
        [sys.executable, "-m", "tools.demo", "--bootstrap", kafka_bootstrap, "--files", "12"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "exactly once: YES" in result.stdout
    assert "service stopped with exit code 0" in result.stdout
