"""Benchmarks of txingest: `python -m bench.run --quick|--all` (see bench/README-section.md)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The shared Kafka helpers (tools/kafka_io.py, tools/local_kafka.py) live beside the tests'.
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))
