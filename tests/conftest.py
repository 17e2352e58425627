"""Where the real Kafka broker for the integration tests comes from, in order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` if set;
2. testcontainers' Kafka module, where a Docker engine answers and ``KAFKA_VERSION``
   is not set;
3. a local KRaft broker from Kafka's own jars (tools/local_kafka.py), started for
   this test session and stopped by its pid at the end: ``KAFKA_VERSION`` (e.g.
   3.9.1) chooses its version, else the one pinned in tools/kafka/pom.xml.

The session's last lines name the broker the tests ran against.

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


# What the session's broker was, for the summary: the tests' output says which
# Kafka version they passed (or failed) on.
BROKER_USED: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in BROKER_USED:
        terminalreporter.write_line(line)


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
        BROKER_USED.append(f"kafka: the broker at {os.environ['KAFKA_BOOTSTRAP_SERVERS']} "
                           "(KAFKA_BOOTSTRAP_SERVERS)")
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    # A chosen version is run from its own jars: the container image has one version.
    if not os.environ.get(local_kafka.VERSION_ENV) and _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        BROKER_USED.append("kafka: testcontainers confluentinc/cp-kafka:8.1.0")
        with KafkaContainer("confluentinc/cp-kafka:8.1.0").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    data = Path(tempfile.mkdtemp(prefix="txingest-kafka-"))
    try:
        broker = local_kafka.start(data=data)
    except (SystemExit, OSError, Exception) as exc:  # noqa: BLE001 - report any failure
        pytest.fail(f"{HOW_TO_GET_ONE}\n{exc}", pytrace=False)
    BROKER_USED.append(f"kafka: local broker, Kafka {broker.version} (tools/local_kafka.py)")
    try:
        yield broker.bootstrap
    finally:
        local_kafka.stop(data)
