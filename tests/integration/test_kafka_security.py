"""Authenticated Kafka for real: a broker whose only client listener is SASL_SSL with
SCRAM (tools/local_kafka.py, ``security="sasl_ssl"``), its certificate signed by a
throwaway CA.

- The right credentials: every transaction arrives exactly once (read_committed).
- A wrong password, or a CA that did not sign the broker's certificate: the service
  exits 1 within seconds with one error line naming the cause, no retry loop.
- In every run the password appears nowhere in the service's output.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.helpers import create_ssl_context

from app.config import Settings
from app.kafka.clients import FatalStartupError, check_connection
from tests.integration.harness import (
    ChildProcess,
    FileServer,
    Route,
    Topics,
    assert_exactly_once,
    create_topics,
    encode,
    lag,
    make_items,
    produce,
    read_all,
    service_env,
    unique,
    wait_until,
)
from tools import kafka_security, local_kafka

FAIL_FAST_S = 30
FORMATS = ["ndjson", "array", "gzip-file", "gzip-encoding"]


@pytest.fixture(scope="session")
def secured_broker() -> Iterator[local_kafka.Broker]:
    """A private SASL_SSL broker for this session, on free ports, stopped by its pid."""
    data = Path(tempfile.mkdtemp(prefix="txingest-kafka-sasl-"))
    try:
        broker = local_kafka.start(data=data, security="sasl_ssl")
    except (SystemExit, Exception) as exc:  # noqa: BLE001 - report any failure
        local_kafka.stop(data)
        pytest.fail("could not start the SASL_SSL Kafka broker for the security tests "
                    "(tools/local_kafka.py needs Java 17+, Maven and openssl; try "
                    f"`python tools/local_kafka.py up --security sasl_ssl`):\n{exc}",
                    pytrace=False)
    assert broker.secured is not None
    try:
        yield broker
    finally:
        local_kafka.stop(data)


def client_options(broker: local_kafka.Broker, mechanism: str = "SCRAM-SHA-512") -> dict[str, Any]:
    """aiokafka options for the test's own clients, configured by hand."""
    assert broker.secured is not None
    return {
        "security_protocol": "SASL_SSL",
        "ssl_context": create_ssl_context(cafile=str(broker.secured.cafile)),
        "sasl_mechanism": mechanism,
        "sasl_plain_username": broker.secured.username,
        "sasl_plain_password": broker.secured.password,
    }


def secret_file(directory: Path, password: str) -> Path:
    """A password file as Kubernetes mounts a Secret: the value, here with a newline."""
    path = directory / f"kafka-password-{secrets.token_hex(4)}"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def secure_env(broker: local_kafka.Broker, topics: Topics, password_file: Path,
               cafile: Path) -> dict[str, str]:
    assert broker.secured is not None
    return service_env(
        broker.bootstrap, topics,
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME=broker.secured.username,
        KAFKA_SASL_PASSWORD_FILE=str(password_file),
        KAFKA_SSL_CAFILE=str(cafile),
        LOG_LEVEL="debug",  # the most the service ever says: still no secret
    )


def unused_topics() -> Topics:
    """Names for a run that must fail before it touches any topic."""
    return Topics(unique("sec-in"), unique("sec-out"), unique("sec-dlq"), unique("sec-group"), 1)


async def exit_within(service: ChildProcess, seconds: float) -> tuple[int, float]:
    """The exit code and the seconds from start to exit; fail if it is still running."""
    started = time.monotonic()
    code = await service.wait(seconds)
    if code is None:
        raise AssertionError(f"still running after {seconds}s (retrying instead of "
                             f"failing fast):\n{service.log_text()[-2000:]}")
    return code, time.monotonic() - started


def log_lines(service: ChildProcess) -> list[dict]:
    """Every output line, each a JSON object: a traceback or stray print fails here."""
    lines = service.log_text().splitlines()
    for line in lines:
        assert line.startswith("{"), f"not a log line: {line!r}\n{service.log_text()[-2000:]}"
    return [orjson.loads(line) for line in lines]


def assert_no_secret(service: ChildProcess, *passwords: str) -> None:
    output = service.log_text()
    for password in passwords:
        assert password not in output, f"a password appears in {service.log_path}"


def assert_one_fatal_line(service: ChildProcess, cause: str) -> str:
    errors = [line for line in log_lines(service) if line["level"] in ("error", "critical")]
    assert len(errors) == 1, f"expected one error line, got {errors}"
    assert cause in errors[0]["msg"], errors[0]
    return errors[0]["msg"]


async def test_right_credentials_every_transaction_once(
        secured_broker, file_server: FileServer, services, tmp_path: Path):
    broker, options = secured_broker, client_options(secured_broker)
    topics = await create_topics(broker.bootstrap, partitions=3, name="sasl", **options)
    expected: dict[str, list[bytes]] = {}
    for n in range(12):
        items = make_items(f"sasl{n}", 1 + n % 5)
        body, headers = encode(items, FORMATS[n % 4])
        expected[file_server.add(f"sasl/f{n}", Route(body, headers=headers))] = items
    await produce(broker.bootstrap, topics.input, [u.encode() for u in expected],
                  topics.partitions, **options)

    password_file = secret_file(tmp_path, broker.secured.password)
    service = services(secure_env(broker, topics, password_file, broker.secured.cafile)).start()

    async def done() -> bool:
        return await lag(broker.bootstrap, topics, **options) == 0

    await wait_until(done, 90, "all input committed through SASL_SSL")
    assert await service.stop() == 0

    assert_exactly_once(await read_all(broker.bootstrap, topics.output, **options), expected)
    assert await read_all(broker.bootstrap, topics.dlq, **options) == []
    stopped = service.events("stopped")[-1]
    assert (stopped["committed"], stopped["dead_lettered"]) == (12, 0)
    assert not [line for line in log_lines(service) if line["level"] == "error"]
    assert_no_secret(service, broker.secured.password)


async def test_wrong_password_fails_fast_with_one_clear_line(
        secured_broker, services, tmp_path: Path):
    wrong = "wrong-" + secrets.token_hex(12)
    env = secure_env(secured_broker, unused_topics(), secret_file(tmp_path, wrong),
                     secured_broker.secured.cafile)
    service = services(env, name="wrong-password").start()

    code, seconds = await exit_within(service, FAIL_FAST_S)
    print(f"wrong password: exit {code} after {seconds:.1f}s")
    assert code == 1
    message = assert_one_fatal_line(service, "Kafka authentication failed")
    assert "user 'txingest'" in message and "SCRAM-SHA-512" in message
    assert_no_secret(service, wrong, secured_broker.secured.password)


async def test_untrusted_ca_fails_fast_with_one_clear_line(
        secured_broker, services, tmp_path: Path):
    other_ca = kafka_security.make_ca(tmp_path / "other-ca", "other-ca")
    env = secure_env(secured_broker, unused_topics(),
                     secret_file(tmp_path, secured_broker.secured.password), other_ca)
    service = services(env, name="untrusted-ca").start()

    code, seconds = await exit_within(service, FAIL_FAST_S)
    print(f"untrusted CA: exit {code} after {seconds:.1f}s")
    assert code == 1
    message = assert_one_fatal_line(service, "TLS verification of the Kafka broker")
    assert "KAFKA_SSL_CAFILE" in message
    assert_no_secret(service, secured_broker.secured.password)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
async def test_check_connection_against_the_broker(secured_broker, mechanism):
    """The start-up check itself, in process: both SCRAM mechanisms log in; a wrong
    password is refused without the check ever saying it."""
    base = dict(kafka_bootstrap_servers=secured_broker.bootstrap,
                kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism=mechanism,
                kafka_sasl_username=secured_broker.secured.username,
                kafka_ssl_cafile=str(secured_broker.secured.cafile), pod_name="check")
    await check_connection(Settings(**base, kafka_sasl_password=secured_broker.secured.password))
    wrong = "wrong-" + secrets.token_hex(12)
    with pytest.raises(FatalStartupError, match="Kafka authentication failed") as failed:
        await check_connection(Settings(**base, kafka_sasl_password=wrong))
    assert wrong not in str(failed.value) and mechanism in str(failed.value)
