"""Where the real Kafka broker for the integration tests comes from, in order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` if set;
2. testcontainers' Kafka module, where a Docker engine answers;
3. a local KRaft broker from Kafka's own jars (tools/local_kafka.py), started for
   this test session and stopped by its pid at the end.

No broker is never a skip: the tests that need one fail and say how to get one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools import local_kafka

HOW_TO_GET_ONE = (
    "no Kafka broker for the integration tests: set KAFKA_BOOTSTRAP_SERVERS, run a Docker "
    "engine, or install Java 17+ and Maven so tools/local_kafka.py can start one "
    "(`make kafka-up` shows any error)"
)


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    if _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:8.1.0").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    data = Path(tempfile.mkdtemp(prefix="txingest-kafka-"))
    try:
        broker = local_kafka.start(data=data)
    except (SystemExit, OSError, Exception) as exc:  # noqa: BLE001 - report any failure
        pytest.fail(f"{HOW_TO_GET_ONE}\n{exc}", pytrace=False)
    try:
        yield broker.bootstrap
    finally:
        local_kafka.stop(data)
