"""Kafka clients built from the settings: the consumer, per-partition producers,
and the connection security they share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

from app.config import Settings


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
    )


def producer_factory(settings: Settings) -> Callable[[int], AIOKafkaProducer]:
    exactly_once = settings.processing_guarantee == "exactly_once"

    def make(partition: int) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **connection(settings),
            # at_least_once: idempotent, no transactions (a baseline for benchmarks).
            transactional_id=settings.transactional_id(partition) if exactly_once else None,
            enable_idempotence=True,
            client_id=f"txingest-{settings.pod_name}-{partition}",
            transaction_timeout_ms=settings.transaction_timeout_ms,
            retry_backoff_ms=settings.kafka_retry_backoff_ms,
            max_request_size=max(settings.max_record_bytes + 65536, 1048576),
            linger_ms=5,
        )
    return make
