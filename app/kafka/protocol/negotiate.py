"""Which transaction protocol to speak, from what the brokers offer and a setting.

    v2      transactions v2 (KIP-890): the cluster finalized ``transaction.version`` 2+
            and the brokers offer Produce v12, TxnOffsetCommit v5 and EndTxn v5
    v1      the older protocol with KIP-447: TxnOffsetCommit v3 carries the group
            generation, OffsetFetch v7 has ``require_stable`` (brokers 2.5+)
    legacy  neither: aiokafka's own requests, fencing by transactional id only

``TRANSACTION_PROTOCOL``: ``auto`` picks the best the cluster offers; ``v2`` and ``v1``
insist, and starting fails with one line if the cluster cannot do it.
"""

from __future__ import annotations

import enum

from aiokafka.client import AIOKafkaClient

from app.kafka.protocol.api_versions import ApiVersionsRequest, BrokerFeatures, broker_features

TRANSACTION_VERSION = "transaction.version"
PRODUCE, OFFSET_FETCH, END_TXN, TXN_OFFSET_COMMIT = 0, 9, 26, 28
_V2_APIS = {PRODUCE: 12, END_TXN: 5, TXN_OFFSET_COMMIT: 5}
_KIP447_APIS = {TXN_OFFSET_COMMIT: 3, OFFSET_FETCH: 7}


class TransactionProtocol(enum.Enum):
    V2 = "v2"
    V1 = "v1"
    LEGACY = "legacy"


class ProtocolUnavailable(Exception):
    """The setting asks for a protocol the cluster does not offer."""


def _missing(features: BrokerFeatures, apis: dict[int, int]) -> list[str]:
    return [f"api {key} v{version}" for key, version in apis.items()
            if not features.offers(key, version)]


def choose(setting: str, features: BrokerFeatures) -> TransactionProtocol:
    """The protocol for ``setting`` (auto, v2 or v1) on a cluster with ``features``."""
    v2_lacks = _missing(features, _V2_APIS)
    if features.level(TRANSACTION_VERSION) < 2:
        v2_lacks.insert(0, f"{TRANSACTION_VERSION} 2 (finalized: "
                           f"{features.level(TRANSACTION_VERSION)})")
    kip447_lacks = _missing(features, _KIP447_APIS)
    if setting == "v2" and v2_lacks:
        raise ProtocolUnavailable(
            f"TRANSACTION_PROTOCOL=v2, but the cluster lacks {', '.join(v2_lacks)}")
    if setting == "v1" and kip447_lacks:
        raise ProtocolUnavailable(
            f"TRANSACTION_PROTOCOL=v1, but the cluster lacks {', '.join(kip447_lacks)} "
            "(KIP-447, brokers 2.5+)")
    if setting in ("auto", "v2") and not v2_lacks:
        return TransactionProtocol.V2
    return TransactionProtocol.LEGACY if kip447_lacks else TransactionProtocol.V1


def combine(answers: list[BrokerFeatures]) -> BrokerFeatures:
    """What every broker offers: API ranges intersected; the features of the broker
    with the newest finalized features (they are cluster-wide)."""
    keys = set.intersection(*(set(a.api_versions) for a in answers))
    ranges = {key: (max(a.api_versions[key][0] for a in answers),
                    min(a.api_versions[key][1] for a in answers)) for key in keys}
    newest = max(answers, key=lambda a: a.finalized_epoch)
    return BrokerFeatures(ranges, newest.finalized, newest.supported, newest.finalized_epoch)


async def cluster_features(client: AIOKafkaClient) -> BrokerFeatures:
    """Ask every broker in the client's metadata (ApiVersions v3+) and combine."""
    answers = []
    for broker in sorted(client.cluster.brokers(), key=lambda b: b.nodeId):
        answers.append(broker_features(await client.send(broker.nodeId, ApiVersionsRequest())))
    if not answers:
        raise ProtocolUnavailable("no broker in the cluster metadata to ask")
    return combine(answers)
