"""The transaction protocol read from the real broker's ApiVersions (v3+, with the
finalized features): Kafka 4.4.0 finalizes transaction.version 2 on a new cluster and
offers transactions v2; 3.9.1 offers KIP-447 on the older protocol. Run with
KAFKA_VERSION unset and with KAFKA_VERSION=3.9.1."""

from __future__ import annotations

import pytest
from aiokafka.client import AIOKafkaClient

from app.config import Settings, load_settings
from app.kafka.clients import FatalStartupError, transaction_protocol
from app.kafka.protocol.negotiate import (
    TRANSACTION_VERSION,
    ProtocolUnavailable,
    TransactionProtocol,
    choose,
    cluster_features,
)
from tests.integration.harness import create_topics, service_env
from tools import local_kafka


async def test_the_broker_s_answer_decides_the_protocol(kafka_bootstrap):
    client = AIOKafkaClient(bootstrap_servers=kafka_bootstrap)
    await client.bootstrap()
    try:
        features = await cluster_features(client)
    finally:
        await client.close()
    assert features.offers(28, 3) and features.offers(9, 7)  # KIP-447, both versions
    assert choose("v1", features) is TransactionProtocol.V1
    if local_kafka.major(local_kafka.kafka_version()) >= 4:
        assert features.finalized_epoch >= 0
        assert features.level(TRANSACTION_VERSION) == 2
        assert features.supported[TRANSACTION_VERSION][1] >= 2
        assert choose("auto", features) is TransactionProtocol.V2
    else:
        assert features.level(TRANSACTION_VERSION) == 0
        assert choose("auto", features) is TransactionProtocol.V1
        with pytest.raises(ProtocolUnavailable, match="lacks transaction.version 2"):
            choose("v2", features)


async def test_the_service_speaks_the_best_protocol_offered_or_the_one_set(kafka_bootstrap):
    def settings(protocol: str) -> Settings:
        return load_settings([], {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                                  "TRANSACTION_PROTOCOL": protocol})
    four = local_kafka.major(local_kafka.kafka_version()) >= 4
    best = "v2" if four else "v1"
    assert await transaction_protocol(settings("auto")) == (TransactionProtocol(best), best)
    assert await transaction_protocol(settings("v1")) == (TransactionProtocol.V1, best)
    if four:
        assert await transaction_protocol(settings("v2")) == (TransactionProtocol.V2, "v2")
        return
    with pytest.raises(FatalStartupError) as refused:
        await transaction_protocol(settings("v2"))
    assert str(refused.value) == (
        "TRANSACTION_PROTOCOL=v2, but the cluster lacks transaction.version 2 (finalized: 0), "
        "api 0 v12, api 26 v5, api 28 v5")


async def test_the_service_says_at_start_which_protocol_it_speaks(kafka_bootstrap, services):
    topics = await create_topics(kafka_bootstrap, 1, name="negotiate")
    service = services(service_env(kafka_bootstrap, topics)).start()
    chosen = await service.wait_event("transaction_protocol", 60)
    assert chosen is not None, service.log_text()[-2000:]
    four = local_kafka.major(local_kafka.kafka_version()) >= 4
    best = "v2" if four else "v1"
    assert (chosen["protocol"], chosen["offered"]) == (best, best)
    assert await service.stop(60) == 0
