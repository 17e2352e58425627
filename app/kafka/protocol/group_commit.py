"""KIP-447 offset commits inside aiokafka's transactions.

``GroupFencedSender`` is aiokafka's sender whose transactional offset commits are
``TxnOffsetCommit`` v3+ with the consumer's generation, member id and group
instance id, read from aiokafka's group coordinator when the request is built. The
group coordinator then refuses a zombie's offsets (ILLEGAL_GENERATION,
UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID) and its transaction can only abort.

Every error the handler meets ends the transaction (abortable) or is retried; none
ends the sender task, as aiokafka's own handler does for a code it does not know.

An abortable error must keep the transaction's partitions and group: aiokafka's own
``error_transaction`` forgets them, its abort then finds the transaction empty and
sends no EndTxn, and the broker's transaction stays open to be committed, zombie's
records included, by the producer's next transaction (seen on 4.4.0).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka import errors as kafka
from aiokafka.client import CoordinationType
from aiokafka.producer.sender import BACKOFF_OVERRIDE, TxnOffsetCommitHandler
from aiokafka.producer.transaction_manager import TransactionManager, TransactionState
from aiokafka.structs import TopicPartition

from app.kafka.protocol.coordinator import RediscoveringSender
from app.kafka.protocol.errors import NotAGroupMemberError, for_code
from app.kafka.protocol.offset_messages import GroupMetadata, TxnOffsetCommitRequest

log = logging.getLogger(__name__)
_COORDINATOR_GONE = (kafka.CoordinatorNotAvailableError, kafka.NotCoordinatorError,
                     kafka.RequestTimedOutError)
_RETRY = (kafka.CoordinatorLoadInProgressError, kafka.UnknownTopicOrPartitionError)
_FENCED_PRODUCER = (kafka.InvalidProducerEpoch, kafka.ProducerFenced)


def consumer_group_metadata(consumer: AIOKafkaConsumer) -> GroupMetadata:
    """The consumer's membership now, as aiokafka's group coordinator holds it."""
    coordinator: Any = consumer._coordinator
    group_id = consumer._group_id
    if coordinator is None or group_id is None:
        raise NotAGroupMemberError("the consumer has no group (not started, or no group_id)")
    return GroupMetadata(group_id, coordinator.generation, coordinator.member_id,
                         coordinator._group_instance_id)


def abort_only(txn: TransactionManager, exc: BaseException) -> None:
    """The transaction can only abort now; its abort still ends it on the broker."""
    txn._transition_to(TransactionState.ABORTABLE_ERROR)
    txn._pending_txn_partitions.clear()  # never added: nothing of them to abort
    for _, _, waiter in txn._pending_txn_offsets:
        waiter.set_exception(exc)
    txn._pending_txn_offsets.clear()
    txn._transaction_waiter.set_exception(exc)
    txn._transaction_waiter.exception()  # raised again by a commit; the abort replaces it


class GroupFencedOffsetCommitHandler(TxnOffsetCommitHandler):
    """aiokafka's TxnOffsetCommit handler with v3+ requests and KIP-447's errors."""

    def __init__(self, sender: GroupFencedSender, offsets: dict, group_id: str,
                 group: GroupMetadata) -> None:
        super().__init__(sender, offsets, group_id)
        self._group = group

    async def do(self, node_id: int) -> bool:
        if self._group.generation_id < 0 or not self._group.member_id:
            # The broker checks nothing for generation -1 and no member id: never send it.
            abort_only(self._sender._txn_manager, NotAGroupMemberError(
                f"group {self._group.group_id}: no generation, the member left or was removed"))
            return True
        result: bool = await super().do(node_id)
        return result

    def create_request(self) -> TxnOffsetCommitRequest:
        txn = self._sender._txn_manager
        offsets = {tp: meta.offset for tp, meta in self._offsets.items()}
        return TxnOffsetCommitRequest(
            txn.transactional_id, txn.producer_id, txn.producer_epoch, self._group, offsets,
            max_version=self._sender.offset_commit_max_version)

    def handle_response(self, response: Any) -> float | None:
        for topic, partitions, _ in response.topics:
            for partition, error_code, _ in partitions:
                backoff = self._handle_partition(TopicPartition(topic, partition), error_code)
                if backoff != 0.0:
                    return backoff
        return None

    def _handle_partition(self, tp: TopicPartition, code: int) -> float | None:
        """0.0: go on with the next partition; None: done; else retry after that long."""
        txn = self._sender._txn_manager
        error = for_code(code)
        if error is kafka.NoError:
            txn.offset_committed(tp, self._offsets[tp].offset, self._group_id)
            return 0.0
        if issubclass(error, _COORDINATOR_GONE):
            self._sender._coordinator_dead(CoordinationType.GROUP)
            return self._default_backoff
        if issubclass(error, _RETRY):
            return self._default_backoff
        if error is kafka.ConcurrentTransactions:
            return self._sender.concurrent_backoff_s
        if issubclass(error, _FENCED_PRODUCER) or error.errno == 90:
            raise kafka.ProducerFenced()  # as aiokafka's own handler: the producer is done
        if error is kafka.TransactionalIdAuthorizationFailed:
            raise error(txn.transactional_id)
        # KIP-447's fencing, TRANSACTION_ABORTABLE and anything unknown: abort, never
        # kill the sender.
        log.debug("TxnOffsetCommit for %s refused: %s", tp, error.__name__)
        abort_only(txn, error(f"group {self._group_id}, {tp}"))
        return None


class GroupFencedSender(RediscoveringSender):
    """aiokafka's sender whose transactional offset commits carry group metadata."""

    group_metadata: Callable[[], GroupMetadata]
    offset_commit_max_version = 4  # under the older transaction protocol: never v5
    concurrent_backoff_s = BACKOFF_OVERRIDE

    async def _do_txn_offset_commit(self, offsets: dict, group_id: str) -> None:
        if not offsets:
            return
        try:
            group = self.group_metadata()
            node_id = await self._find_coordinator(CoordinationType.GROUP, group_id)
        except (kafka.GroupAuthorizationFailedError, NotAGroupMemberError) as exc:
            abort_only(self._txn_manager, exc)
            return
        await GroupFencedOffsetCommitHandler(self, offsets, group_id, group).do(node_id)
