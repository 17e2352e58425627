"""SIGTERM during imports and start-up (no broker needed): a clean stop, not a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from app import signals
from tools.local_kafka import free_port


# From 0.05 s: before that the interpreter itself is still starting, ahead of any code of ours.
@pytest.mark.parametrize("delay", [0.05, 0.1, 0.2, 0.35, 0.6])
def test_sigterm_early_exits_zero_with_the_summary(delay):
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
           "HTTP_PORT": "0", "LOG_FORMAT": "json"}
    proc = subprocess.Popen([sys.executable, "-m", "app"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        time.sleep(delay)  # the moment under test, not a wait for a condition
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    events = [json.loads(line).get("event") for line in out.splitlines() if line.startswith("{")]
    assert "stopped" in events, out
    assert "Traceback" not in out


def test_a_second_early_signal_exits_at_once(monkeypatch):
    exits: list[int] = []
    monkeypatch.setattr(signals.os, "_exit", exits.append)
    signals._remember(signal.SIGTERM, None)
    assert exits == []
    signals._remember(signal.SIGINT, None)
    assert exits == [1]
    assert signals.received_early() == [signal.SIGTERM, signal.SIGINT]
    assert signals.received_early() == [], "replayed once"
