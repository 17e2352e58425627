"""The peer: Quix Streams in its exactly-once mode doing the same job.

It reads the same input topic, downloads each file (requests, one at a time, as a
Quix Streams app does in its processing function), parses it with the project's own
parser (app/files/parse.py) and writes one output record per transaction with the same
key and headers as the service. Quix Streams commits a checkpoint (outputs and
offsets in one Kafka transaction) every ``commit_interval`` (its default, 5 s), not
per input record: that is its design.

Quix Streams and its dependencies (confluent-kafka, rocksdict, pydantic, ...) live
in their own virtualenv under .cache/, made by :func:`ensure_venv`; this module runs
there, from the repository root: ``<venv>/bin/python -m bench.peer '<json config>'``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "peer-venv"
# The peer and what it needs to import app/files/parse.py (which imports aiokafka's errors).
PACKAGES = ["quixstreams==3.28.1", "aiokafka==0.14.0", "orjson==3.13.0"]


def python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> str | None:
    """Make the peer's virtualenv if needed; None when ready, else the error text."""
    marker = VENV / ".installed"
    wanted = "\n".join(PACKAGES)
    if marker.exists() and marker.read_text() == wanted:
        return None
    steps = [[sys.executable, "-m", "venv", str(VENV)],
             [str(python()), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              *PACKAGES]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            return f"{' '.join(step)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
    marker.write_text(wanted)
    return None


def run(cfg: dict) -> None:
    import requests
    from quixstreams import Application, message_context
    from quixstreams.models.serializers import Serializer

    from app.files.parse import parse_transactions  # from the repository root (the cwd)

    class FirstOfTuple(Serializer):
        """Output values travel as (value, headers, key) until serialised."""

        def __call__(self, value, ctx):  # type: ignore[override]
            return value[0]

    session = requests.Session()

    def transactions(value: bytes) -> list[tuple]:
        ctx = message_context()
        link = value.decode()
        response = session.get(link, timeout=120)
        response.raise_for_status()
        items = parse_transactions(response.content, max_items=10**6)
        base = [("source-topic", ctx.topic.encode()),
                ("source-partition", str(ctx.partition).encode()),
                ("source-offset", str(ctx.offset).encode()), ("source-url", value)]
        count = str(len(items)).encode()
        return [(item.value, [*base, ("index", str(i).encode()), ("count", count)], value)
                for i, item in enumerate(items)]

    app = Application(broker_address=cfg["bootstrap"], consumer_group=cfg["group"],
                      auto_offset_reset="earliest", processing_guarantee="exactly-once",
                      auto_create_topics=False, loglevel="WARNING",
                      state_dir=cfg["state_dir"])
    source = app.topic(cfg["input"], key_deserializer="bytes", value_deserializer="bytes")
    output = app.topic(cfg["output"], key_serializer="bytes", value_serializer=FirstOfTuple())
    sdf = app.dataframe(source)
    sdf = sdf.apply(transactions, expand=True)
    sdf = sdf.set_headers(lambda value, key, timestamp, headers: value[1])
    sdf.to_topic(output, key=lambda value: value[2])
    app.run()


if __name__ == "__main__":
    import json
    run(json.loads(sys.argv[1]))
