"""Connection options and the start-up check's verdicts (no broker: the check's
connection is scripted; tests/integration/test_kafka_security.py runs it for real)."""

from __future__ import annotations

import ssl
import types

import aiokafka
import pytest
from aiokafka import errors as kafka

from app.config import Settings
from app.kafka import clients
from app.kafka.clients import (
    FatalStartupError,
    check_connection,
    connection,
    startup_failure,
)
from app.kafka.protocol.group_commit import GroupFencedSender
from app.kafka.protocol.offset_messages import GroupMetadata
from app.redaction import redact
from tools.local_kafka import free_port

PASSWORD = "s3cret-Pa55word"
SASL = {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "txingest", "kafka_sasl_password": PASSWORD,
        "pod_name": "pod-0"}


def settings(**values: object) -> Settings:
    return Settings(**{**SASL, **values})  # type: ignore[arg-type]


def test_plaintext_has_no_security_options():
    assert connection(Settings(kafka_bootstrap_servers="k:9092")) == {
        "bootstrap_servers": "k:9092", "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_options_carry_the_login_and_a_verifying_context():
    options = connection(settings())
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "txingest"
    assert options["sasl_plain_password"] == PASSWORD
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_sasl_plaintext_has_no_tls():
    assert "ssl_context" not in connection(settings(kafka_security_protocol="SASL_PLAINTEXT"))


def test_redact_masks_every_occurrence():
    assert redact(f"a {PASSWORD} b {PASSWORD}", PASSWORD) == "a *** b ***"
    assert redact("nothing to hide", None) == "nothing to hide"
    assert redact("nothing to hide", "") == "nothing to hide"


@pytest.mark.parametrize("error", [
    kafka.SaslAuthenticationFailed("Authentication failed: invalid credentials"),
    kafka.UnsupportedSaslMechanismError("broker does not support PLAIN"),
    kafka.AuthenticationFailedError(),
])
def test_authentication_failures_are_fatal_and_name_the_user(error):
    message = startup_failure(error, settings(), "k:9093")
    assert message is not None
    assert message.startswith("Kafka authentication failed at k:9093 for user 'txingest' "
                              "(SCRAM-SHA-512)")
    assert "KAFKA_SASL_PASSWORD" in message


def test_untrusted_certificate_is_fatal_and_points_at_the_ca_file():
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] ...")
    error.verify_message = "self-signed certificate in certificate chain"
    message = startup_failure(error, settings(), "k:9093")
    assert message == ("TLS verification of the Kafka broker at k:9093 failed (self-signed "
                       "certificate in certificate chain); check KAFKA_SSL_CAFILE and the "
                       "broker address")


def test_other_tls_errors_are_fatal():
    error = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    error.reason = "WRONG_VERSION_NUMBER"
    message = startup_failure(error, settings(), "k:9093")
    assert message is not None and "WRONG_VERSION_NUMBER" in message


@pytest.mark.parametrize("error", [
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError(),
    kafka.KafkaConnectionError("Connection at k:9093 closed"),
    kafka.RequestTimedOutError(),
])
def test_unreachable_is_not_fatal(error):
    assert startup_failure(error, settings(), "k:9093") is None


def test_the_password_never_appears_even_if_the_broker_echoes_it():
    error = kafka.SaslAuthenticationFailed(f"bad password {PASSWORD}")
    message = startup_failure(error, settings(), "k:9093")
    assert message is not None and PASSWORD not in message and "***" in message


async def test_check_raises_on_refused_login_without_the_secret(monkeypatch):
    async def refuse(host, port, **options):
        assert options["sasl_plain_password"] == PASSWORD  # the clients' own options
        assert "bootstrap_servers" not in options
        raise kafka.SaslAuthenticationFailed(f"invalid credentials for {PASSWORD}")

    monkeypatch.setattr(clients, "create_conn", refuse)
    with pytest.raises(FatalStartupError) as failed:
        await check_connection(settings(kafka_bootstrap_servers="k1:9093"))
    assert "authentication failed at k1:9093" in str(failed.value)
    assert PASSWORD not in str(failed.value)
    assert failed.value.__cause__ is None and failed.value.__suppress_context__


async def test_check_closes_a_good_connection(monkeypatch):
    closed = []

    class Conn:
        def close(self) -> None:
            closed.append(True)

    async def accept(host, port, **options):
        return Conn()

    monkeypatch.setattr(clients, "create_conn", accept)
    await check_connection(settings(kafka_bootstrap_servers="k1:9093,k2:9093"))
    assert closed == [True]


async def test_check_leaves_an_unreachable_broker_to_the_clients():
    port = free_port()  # nothing listens there
    await check_connection(settings(kafka_bootstrap_servers=f"127.0.0.1:{port}"))


async def test_plaintext_is_not_checked(monkeypatch):
    async def never(host, port, **options):
        raise AssertionError("PLAINTEXT has no login or TLS to check")

    monkeypatch.setattr(clients, "create_conn", never)
    await check_connection(Settings(kafka_bootstrap_servers="k1:9092"))


async def test_producers_send_kip447_offsets_only_when_given_the_group_s_consumer():
    settings = Settings(transactional_id_prefix="g", pod_name="pod-0")
    consumer = aiokafka.AIOKafkaConsumer(group_id="g", group_instance_id="pod-0")
    fenced = clients.producer_factory(settings, consumer)(3)
    plain = clients.producer_factory(settings)(3)
    try:
        assert isinstance(fenced._sender, GroupFencedSender)
        assert not isinstance(plain._sender, GroupFencedSender)
        consumer._coordinator = types.SimpleNamespace(  # as aiokafka's, once joined
            generation=4, member_id="m-1", _group_instance_id="pod-0")
        assert fenced._sender.group_metadata() == GroupMetadata("g", 4, "m-1", "pod-0")
    finally:
        for made in (fenced, plain):
            await made.client.close()
        await consumer._client.close()
