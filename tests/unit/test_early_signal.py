"""SIGTERM during imports and start-up (no broker needed): a clean stop, not a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from app.ops import signals
from tools.local_kafka import free_port
from tools.proc import handles_signal


# Measured from the moment our first handler is in place (app/ops/signals.py, the first line
# of app/__main__.py), not from the fork nor the interpreter's own SIGINT handler: under a
# loaded machine the interpreter's start-up stretched past 100 ms, and a signal before any
# code of ours runs can't be handled by it. The imports after that line take far longer,
# so each moment still lands in start-up.
@pytest.mark.parametrize("delay", [0.1, 0.15, 0.25, 0.4, 0.65])
def test_sigterm_early_exits_zero_with_the_summary(delay):
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
           "HTTP_PORT": "0", "LOG_FORMAT": "json"}
    proc = subprocess.Popen([sys.executable, "-m", "app"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_until_it_catches(proc.pid, signal.SIGTERM)
        time.sleep(delay)  # the moment under test, not a wait for a condition
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    events = [json.loads(line).get("event") for line in out.splitlines() if line.startswith("{")]
    assert "stopped" in events, out
    assert "Traceback" not in out


def wait_until_it_catches(pid: int, sig: signal.Signals, timeout: float = 20.0) -> None:
    """Until the process has a handler for ``sig``."""
    deadline = time.monotonic() + timeout
    while not handles_signal(pid, sig):
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} installed no {sig.name} handler in {timeout} s")
        time.sleep(0.0005)


def test_a_second_early_signal_exits_at_once(monkeypatch):
    exits: list[int] = []
    monkeypatch.setattr(signals.os, "_exit", exits.append)
    signals._remember(signal.SIGTERM, None)
    assert exits == []
    signals._remember(signal.SIGINT, None)
    assert exits == [1]
    assert signals.received_early() == [signal.SIGTERM, signal.SIGINT]
    assert signals.received_early() == [], "replayed once"
