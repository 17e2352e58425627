"""Start-up failures end the process with a clear line, not a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def test_unreachable_kafka_exits_1_with_a_clear_line():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "HTTP_PORT": "0",
           "LOG_FORMAT": "text"}
    result = subprocess.run([sys.executable, "-m", "app"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 1
    assert f"cannot start: Kafka at 127.0.0.1:{port}" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
