"""The coordinators looked up again when the way to them is lost (aiokafka issue 1145).

aiokafka's ``Sender`` keeps the node coordinating its transactional id and the node
coordinating the group its offsets go to, and asks FindCoordinator only when it has
none. aiokafka 0.14 forgets a node that answers NOT_COORDINATOR or
COORDINATOR_NOT_AVAILABLE, refuses a connection or lets a request time out. Two gaps
remain, closed here:

- A connection lost under a request (KafkaConnectionError) is retried on the node
  kept, which may no longer coordinate anything; the move is noticed only through
  another error, after a connect timeout where the node is unreachable. Here a lost
  connection to a coordinator makes the next request look it up again, as Kafka's
  Java client does (KAFKA-16951).
- A FindCoordinator that meets a lost connection (or another retriable error
  FindCoordinator's own handling does not name) ends aiokafka's sender task: the
  producer is dead. Here the look-up is retried after the retry backoff.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import errors as kafka
from aiokafka.client import ConnectionGroup, CoordinationType
from aiokafka.producer.sender import Sender

log = logging.getLogger(__name__)


class RediscoveringSender(Sender):
    """aiokafka's sender whose coordinators are found again after a lost connection."""

    async def _find_coordinator(self, coordinator_type: CoordinationType,
                                coordinator_key: str) -> int:
        self._forget_if_disconnected(coordinator_type, coordinator_key)
        while True:
            try:
                node: int = await super()._find_coordinator(coordinator_type, coordinator_key)
            except kafka.KafkaError as exc:
                if not lost_look_up(exc):
                    raise
                log.info("FindCoordinator for %s failed (%r); trying again",
                         coordinator_key, exc.__cause__)
                self.client.force_metadata_update()
                await asyncio.sleep(self._retry_backoff)
                continue
            self._links().setdefault(coordinator_type, self._connection(node))
            return node

    def _forget_if_disconnected(self, coordinator_type: CoordinationType,
                                coordinator_key: str) -> None:
        """Drop the coordinator kept if the connection it was found on is gone, even
        if a new one to the same node exists (made for the other coordinator)."""
        node = self._coordinators.get(coordinator_type)
        if node is None:
            return
        link = self._links().get(coordinator_type)
        if link is not None and link is self._connection(node) and link.connected():
            return
        log.info("connection to node %s, coordinator for %s, lost: looking it up again",
                 node, coordinator_key)
        self._coordinator_dead(coordinator_type)

    def _coordinator_dead(self, coordinator_type: CoordinationType) -> None:
        super()._coordinator_dead(coordinator_type)
        self._links().pop(coordinator_type, None)

    def _connection(self, node: int) -> Any:
        return self.client._conns.get((node, ConnectionGroup.COORDINATION))

    def _links(self) -> dict[CoordinationType, Any]:
        """The connection each kept coordinator was found on. Kept in the instance's
        dict: aiokafka makes the sender, so no __init__ of this class runs."""
        links: dict[CoordinationType, Any] = self.__dict__.setdefault("_coordinator_links", {})
        return links


def lost_look_up(exc: kafka.KafkaError) -> bool:
    """aiokafka's FindCoordinator gave up on an error worth another try.

    aiokafka 0.14 wraps the errors it does not retry itself in a bare KafkaError whose
    cause is the original; a retriable cause (a lost connection, a coordinator
    loading) is a look-up to repeat, anything else (authorization) is final."""
    cause = exc.__cause__
    return type(exc) is kafka.KafkaError and isinstance(cause, kafka.KafkaError) \
        and cause.retriable
