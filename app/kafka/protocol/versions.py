"""Request builders that send the newest version within a range, never beyond it.

aiokafka's ``Request.prepare`` picks the newest version both sides support. A version
here may change the protocol's meaning (``TxnOffsetCommit`` v5 joins the group to the
transaction under transactions v2), so the caller caps it.
"""

from __future__ import annotations

from typing import Any

from aiokafka.errors import IncompatibleBrokerVersion
from aiokafka.protocol.api import Request, RequestStruct


class BoundedRequest(Request[RequestStruct]):
    """Subclasses list their structs in ``_CLASSES`` (ascending); ``max_version`` caps
    what an instance may send."""

    API_KEY = -1
    max_version: int = 32767

    def __init_subclass__(cls) -> None:
        # aiokafka's hook reads the structs from Request[...]; ours list them directly.
        super(Request, cls).__init_subclass__()
        if "_CLASSES" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} must list its structs in _CLASSES")

    def prepare(self, versions: dict[int, tuple[int, int]]) -> Any:
        low, high = versions.get(self.API_KEY, (-1, -1))
        for struct in reversed(self._CLASSES):
            if low <= struct.API_VERSION <= min(high, self.max_version):
                return self.build(struct)  # type: ignore[arg-type]
        ours = ", ".join(f"v{c.API_VERSION}" for c in self._CLASSES
                         if c.API_VERSION <= self.max_version)
        raise IncompatibleBrokerVersion(
            f"{type(self).__name__}: the broker offers v{low}-v{high}, this client sends {ours}")
