"""Kafka clients built from the settings: the consumer, per-partition producers,
the connection security they share, and a check of that security at start."""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import errors as kafka
from aiokafka.client import AIOKafkaClient
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import TopicPartition

from app.config import Settings
from app.kafka.protocol.group_commit import consumer_group_metadata
from app.kafka.protocol.negotiate import (
    ProtocolUnavailable,
    TransactionProtocol,
    choose,
    cluster_features,
)
from app.kafka.protocol.producer import TransactionalProducer
from app.kafka.protocol.watermarks import high_watermark
from app.redaction import redact

CHECK_TIMEOUT_MS = 15_000
# The broker refused the login: the same settings will be refused every time.
_AUTH_ERRORS = (
    kafka.SaslAuthenticationFailed,
    kafka.AuthenticationFailedError,
    kafka.AuthenticationMethodNotSupported,
    kafka.UnsupportedSaslMechanismError,
    kafka.IllegalSaslStateError,
)

log = logging.getLogger(__name__)


class FatalStartupError(Exception):
    """Kafka refuses this service's credentials or TLS settings; no retry will help."""


def connection(settings: Settings) -> dict[str, Any]:
    """Bootstrap servers and security, for every client the service makes."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
    if settings.kafka_security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return options


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    rebalance_ms = int(settings.shutdown_timeout_s * 1000) + 10_000
    return AIOKafkaConsumer(
        **connection(settings),
        group_id=settings.group_id,
        group_instance_id=settings.pod_name if settings.static_membership else None,
        client_id=f"txingest-{settings.pod_name}",
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=min(3000, settings.session_timeout_ms // 3),
        # Revocation closes tasks within the shutdown timeout; the group waits longer,
        # and a JoinGroup request may wait that long for its answer.
        rebalance_timeout_ms=rebalance_ms,
        request_timeout_ms=rebalance_ms + 5_000,
        max_poll_records=500,
        metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
    )


class RestoreConsumer(AIOKafkaConsumer):
    """A consumer that also tells where a partition's log ends, open transactions and
    all (``end_offsets`` under read_committed stops at the first open one)."""

    async def log_end(self, tp: TopicPartition) -> int:
        return await high_watermark(self._client, tp)


def make_restore_consumer(settings: Settings) -> RestoreConsumer:
    """Reads a dedup changelog partition to its end: no group, committed data only. A
    position that falls out of range goes back to the log start: every live key is there
    (the default, latest, would end a restore early with entries missing)."""
    return RestoreConsumer(
        **connection(settings),
        group_id=None,
        client_id=f"txingest-{settings.pod_name}-restore",
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )


def producer_factory(settings: Settings, consumer: AIOKafkaConsumer | None = None,
                     transactions_v2: bool = False) -> Callable[[int], AIOKafkaProducer]:
    """Producer ``number``: a slot of this replica's pool, or an input partition
    (TRANSACTIONAL_ID_SCHEME). Given the group's consumer (KIP-447: the cluster offers
    it), their offset commits carry the consumer's generation, member and instance id;
    with ``transactions_v2`` they speak transactions v2 (KIP-890)."""
    exactly_once = settings.processing_guarantee == "exactly_once"

    def make(number: int) -> AIOKafkaProducer:
        options: dict[str, Any] = dict(
            **connection(settings),
            # at_least_once: idempotent, no transactions (a baseline for benchmarks).
            transactional_id=settings.transactional_id(number) if exactly_once else None,
            enable_idempotence=True,
            client_id=f"txingest-{settings.pod_name}-{number}",
            transaction_timeout_ms=settings.transaction_timeout_ms,
            retry_backoff_ms=settings.kafka_retry_backoff_ms,
            max_request_size=max(settings.max_record_bytes + 65536, 1048576),
            linger_ms=5,
            # A file's transactions go out together: big batches send them faster
            # (docs/benchmarks.md).
            max_batch_size=256 * 1024,
        )
        if exactly_once and consumer is not None:
            return TransactionalProducer(
                group_metadata=functools.partial(consumer_group_metadata, consumer),
                transactions_v2=transactions_v2, **options)
        return AIOKafkaProducer(**options)
    return make


async def transaction_protocol(settings: Settings) -> tuple[TransactionProtocol, str]:
    """The transaction protocol to speak, and the best the cluster offers, from the
    brokers' ApiVersions and TRANSACTION_PROTOCOL.

    Raise FatalStartupError when the setting asks for what the cluster lacks."""
    client = AIOKafkaClient(**connection(settings),
                            client_id=f"txingest-{settings.pod_name}-negotiate")
    try:
        await client.bootstrap()
        features = await cluster_features(client)
        speaking = choose(settings.transaction_protocol, features)
    except ProtocolUnavailable as exc:
        raise FatalStartupError(str(exc)) from None
    finally:
        await client.close()
    offered = choose("auto", features).value
    if speaking is TransactionProtocol.LEGACY and settings.transactional_id_scheme == "pod":
        raise FatalStartupError(
            "TRANSACTIONAL_ID_SCHEME=pod needs KIP-447 (brokers 2.5+), which the cluster "
            "lacks: without it nothing fences a paused replica's offsets; set "
            "TRANSACTIONAL_ID_SCHEME=partition")
    log.info("transaction protocol %s (the cluster offers %s)", speaking.value, offered,
             extra={"event": "transaction_protocol", "protocol": speaking.value,
                    "offered": offered})
    return speaking, offered


async def check_connection(settings: Settings) -> None:
    """Connect once to a bootstrap server with the clients' own security options.

    Raise FatalStartupError if the broker refuses the login or TLS fails; aiokafka's
    clients would only report "Unable to bootstrap". Anything else (a broker not
    reachable yet) is left to the clients, as before. PLAINTEXT has nothing to check.
    """
    if settings.kafka_security_protocol == "PLAINTEXT":
        return
    options = connection(settings)
    del options["bootstrap_servers"]
    for host, port, _ in collect_hosts(settings.kafka_bootstrap_servers):
        try:
            conn = await create_conn(host, port, client_id=f"txingest-{settings.pod_name}-check",
                                     request_timeout_ms=CHECK_TIMEOUT_MS, **options)
        except (OSError, kafka.KafkaError) as exc:  # TimeoutError is an OSError
            message = startup_failure(exc, settings, f"{host}:{port}")
            if message is not None:
                raise FatalStartupError(message) from None
            continue
        conn.close()
        return


def startup_failure(exc: BaseException, settings: Settings, address: str) -> str | None:
    """What to say about a connection failure no retry can fix; None for any other.

    Names the cause and the setting to check, never the password."""
    if isinstance(exc, _AUTH_ERRORS):
        text = (f"Kafka authentication failed at {address} for user "
                f"{settings.kafka_sasl_username!r} ({settings.kafka_sasl_mechanism}): {exc}; "
                "check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM")
    elif isinstance(exc, ssl.SSLCertVerificationError):
        text = (f"TLS verification of the Kafka broker at {address} failed "
                f"({exc.verify_message}); check KAFKA_SSL_CAFILE and the broker address")
    elif isinstance(exc, ssl.SSLError):
        text = (f"TLS handshake with Kafka at {address} failed ({exc.reason or exc}); "
                "check KAFKA_SECURITY_PROTOCOL and the KAFKA_SSL_* files")
    else:
        return None
    return redact(text, settings.kafka_sasl_password)
