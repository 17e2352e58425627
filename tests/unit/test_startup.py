"""Start-up with Kafka down: wait for it, log why, stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys


def test_unreachable_kafka_is_waited_for_until_sigterm():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "HTTP_PORT": "0",
           "LOG_FORMAT": "text"}
    proc = subprocess.Popen([sys.executable, "-m", "app"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        # A broker that is down (restarting, say) is waited for, not a crash.
        for line in proc.stdout:
            if f"waiting for Kafka at 127.0.0.1:{port}" in line:
                break
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "stopped: records committed=0" in rest
    assert "Traceback" not in rest
