"""ApiVersions v3-v4: the broker's API versions and the cluster's finalized features.

aiokafka asks with v0-v2, which carry no features; ``transaction.version`` (KIP-890)
is a finalized feature, so choosing the transaction protocol needs v3+.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO

from aiokafka.protocol.api import RequestStruct, Response, ResponseHeader_v0
from aiokafka.protocol.types import Int16, Int32, Int64

from app.kafka.protocol import AIOKAFKA_VERSION
from app.kafka.protocol.versions import BoundedRequest
from app.kafka.protocol.wire import COMPACT_STRING, compact_array, decode_tagged, flexible

SOFTWARE_NAME = "txingest-aiokafka"  # KIP-511: letters, digits, '-' and '.'

_SUPPORTED_FEATURES = compact_array(
    ("name", COMPACT_STRING), ("min_version", Int16), ("max_version", Int16))
_FINALIZED_FEATURES = compact_array(
    ("name", COMPACT_STRING), ("max_version_level", Int16), ("min_version_level", Int16))


class ApiVersionsResponse_v3(Response):
    API_KEY = 18
    API_VERSION = 3
    SCHEMA = flexible(
        ("error_code", Int16),
        ("api_keys", compact_array(
            ("api_key", Int16), ("min_version", Int16), ("max_version", Int16))),
        ("throttle_time_ms", Int32),
    )  # tagged: 0 supported features, 1 finalized features epoch, 2 finalized features


class ApiVersionsResponse_v4(ApiVersionsResponse_v3):
    API_VERSION = 4  # features with a minimum version of 0 are listed too (KAFKA-17011)


class ApiVersionsRequest_v3(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 18
    API_VERSION = 3
    RESPONSE_TYPE = ApiVersionsResponse_v3
    SCHEMA = flexible(("client_software_name", COMPACT_STRING),
                      ("client_software_version", COMPACT_STRING))

    def parse_response_header(self, read_buffer: BytesIO | bytes) -> ResponseHeader_v0:
        # Kafka answers ApiVersions with header v0 at every version, so that a client
        # asking too new a version can still read the error.
        return ResponseHeader_v0.decode(read_buffer)


class ApiVersionsRequest_v4(ApiVersionsRequest_v3):
    API_VERSION = 4
    RESPONSE_TYPE = ApiVersionsResponse_v4


class ApiVersionsRequest(BoundedRequest):
    API_KEY = 18
    _CLASSES = (ApiVersionsRequest_v3, ApiVersionsRequest_v4)

    def build(self, request_struct_class: type[RequestStruct]) -> RequestStruct:
        return request_struct_class(SOFTWARE_NAME, AIOKAFKA_VERSION, {})


@dataclass(frozen=True)
class BrokerFeatures:
    """What one broker answered: API version ranges, and the cluster's features."""

    api_versions: dict[int, tuple[int, int]]
    finalized: dict[str, tuple[int, int]] = field(default_factory=dict)  # name: (min, max)
    supported: dict[str, tuple[int, int]] = field(default_factory=dict)
    finalized_epoch: int = -1

    def level(self, feature: str) -> int:
        """The finalized (max) level of a feature; 0 when it is not finalized."""
        return self.finalized.get(feature, (0, 0))[1]

    def offers(self, api_key: int, version: int) -> bool:
        low, high = self.api_versions.get(api_key, (-1, -1))
        return low <= version <= high


def broker_features(response: ApiVersionsResponse_v3) -> BrokerFeatures:
    """Read a v3+ response; the features are tagged fields."""
    tags = response.tags
    supported = decode_tagged(tags, 0, _SUPPORTED_FEATURES, [])
    finalized = decode_tagged(tags, 2, _FINALIZED_FEATURES, [])
    return BrokerFeatures(
        api_versions={key: (low, high) for key, low, high, _ in response.api_keys},
        finalized={name: (low, high) for name, high, low, _ in finalized},
        supported={name: (low, high) for name, low, high, _ in supported},
        finalized_epoch=decode_tagged(tags, 1, Int64, -1),
    )
