"""Choosing the transaction protocol from the brokers' answers and the setting."""

from __future__ import annotations

import pytest

from app.kafka.protocol.api_versions import BrokerFeatures
from app.kafka.protocol.negotiate import (
    ProtocolUnavailable,
    TransactionProtocol,
    choose,
    combine,
)

V2, V1, LEGACY = TransactionProtocol.V2, TransactionProtocol.V1, TransactionProtocol.LEGACY
# API ranges as brokers answer them (Produce 0, OffsetFetch 9, EndTxn 26, TxnOffsetCommit 28)
KAFKA_4 = {0: (3, 13), 9: (1, 10), 26: (0, 5), 28: (0, 5)}
KAFKA_3_9 = {0: (0, 11), 9: (0, 9), 26: (0, 4), 28: (0, 4)}
KAFKA_2_4 = {0: (0, 8), 9: (0, 6), 26: (0, 1), 28: (0, 2)}


def features(apis: dict, transaction_version: int | None) -> BrokerFeatures:
    finalized = {} if transaction_version is None else {
        "transaction.version": (0, transaction_version)}
    return BrokerFeatures(dict(apis), finalized, finalized_epoch=7)


@pytest.mark.parametrize("apis, level, setting, expected", [
    (KAFKA_4, 2, "auto", V2),
    (KAFKA_4, 2, "v2", V2),
    (KAFKA_4, 2, "v1", V1),
    (KAFKA_4, 1, "auto", V1),     # downgraded with kafka-features
    (KAFKA_4, None, "auto", V1),  # not finalized at all
    (KAFKA_3_9, None, "auto", V1),
    (KAFKA_3_9, 2, "auto", V1),   # a level without the request versions is not enough
    (KAFKA_2_4, None, "auto", LEGACY),
    ({**KAFKA_4, 0: (3, 11)}, 2, "auto", V1),  # no Produce v12
])
def test_the_best_protocol_the_cluster_offers(apis, level, setting, expected):
    assert choose(setting, features(apis, level)) is expected


@pytest.mark.parametrize("apis, level, setting, says", [
    (KAFKA_4, 1, "v2", "TRANSACTION_PROTOCOL=v2, but the cluster lacks transaction.version 2 "
                       "(finalized: 1)"),
    (KAFKA_3_9, None, "v2", "lacks transaction.version 2 (finalized: 0), api 0 v12, "
                            "api 26 v5, api 28 v5"),
    (KAFKA_2_4, None, "v1", "TRANSACTION_PROTOCOL=v1, but the cluster lacks api 28 v3, "
                            "api 9 v7 (KIP-447, brokers 2.5+)"),
])
def test_an_insisted_protocol_the_cluster_lacks_is_refused_saying_what_is_missing(
        apis, level, setting, says):
    with pytest.raises(ProtocolUnavailable) as refused:
        choose(setting, features(apis, level))
    assert says in str(refused.value)


def test_a_cluster_offers_what_every_broker_offers():
    old, new = features(KAFKA_3_9, None), features(KAFKA_4, 2)
    new = BrokerFeatures(new.api_versions, new.finalized, finalized_epoch=9)
    both = combine([new, old])
    assert both.api_versions[0] == (3, 11) and both.api_versions[28] == (0, 4)
    assert both.level("transaction.version") == 2  # the newest finalized features
    assert choose("auto", both) is V1  # one broker without Produce v12 holds v2 back
