"""Transactions v2 (KIP-890 part 2) in aiokafka's producer.

Three round trips per transaction instead of five, in this order:

    1. TxnOffsetCommit v5 to the group coordinator: it joins the group's offsets to the
       transaction itself (no AddOffsetsToTxn), and starts the transaction
    2. Produce v12 to each partition leader: the leader adds its partition to the
       transaction (no AddPartitionsToTxn)
    3. EndTxn v5: commit or abort; the answer carries the producer's next epoch (and a
       new producer id when the epoch would overflow)

The offset commit goes first, retried after a couple of milliseconds while the previous
transaction's markers are still being written (CONCURRENT_TRANSACTIONS): records sent
first meet the partition leader's own, much longer, retry of the same wait
(docs/design.md has the measurements).

Every transaction ends on a new epoch, so the sequence numbers of every partition start
again from zero. A batch drained under one epoch is never resent under the next: the
committer checks every send before it ends the transaction, and aiokafka flushes every
batch before it sends EndTxn.
"""

from __future__ import annotations

import collections
from typing import Any

from aiokafka import errors as kafka
from aiokafka.client import CoordinationType
from aiokafka.producer.sender import EndTxnHandler, InitPIDHandler, SendProduceReqHandler
from aiokafka.producer.transaction_manager import PidAndEpoch, TransactionManager
from aiokafka.structs import TopicPartition

from app.kafka.protocol.errors import ProducerFencedError, for_code
from app.kafka.protocol.group_commit import GroupFencedSender
from app.kafka.protocol.txn_messages import EndTxnRequest, InitProducerIdRequest, ProduceRequest

_FENCED = (kafka.InvalidProducerEpoch.errno, ProducerFencedError.errno)
MARKERS_BACKOFF_S = 0.002  # the previous transaction's markers take about this long


class TransactionManagerV2(TransactionManager):
    """aiokafka's transaction state, where the brokers add partitions and the group."""

    def maybe_add_partition_to_txn(self, tp: TopicPartition) -> None:
        if self.transactional_id is None:
            return
        assert self.is_in_transaction()
        self._txn_partitions.add(tp)  # its leader adds it: nothing to send, nothing muted

    def consumer_group_to_add(self) -> None:
        return None  # TxnOffsetCommit v5 adds the group itself

    def offsets_to_commit(self) -> tuple[Any, str] | None:
        for group_id, offsets, _ in self._pending_txn_offsets:
            # Sent, so the transaction may have started: it must end with an EndTxn.
            self._txn_consumer_group = group_id
            return offsets, group_id
        return None

    def next_epoch(self, producer_id: int, producer_epoch: int) -> None:
        """The epoch EndTxn answered with: every partition's sequence starts again."""
        self._pid_and_epoch = PidAndEpoch(producer_id, producer_epoch)
        self._sequence_numbers.clear()


class InitProducerIdHandler(InitPIDHandler):
    def create_request(self) -> InitProducerIdRequest:
        txn = self._sender._txn_manager
        return InitProducerIdRequest(txn.transactional_id, txn.transaction_timeout_ms)


class EndTxnV2Handler(EndTxnHandler):
    def create_request(self) -> EndTxnRequest:
        txn = self._sender._txn_manager
        return EndTxnRequest(txn.transactional_id, txn.producer_id, txn.producer_epoch,
                             bool(self._commit_result))

    def handle_response(self, resp: Any) -> float | None:
        txn: TransactionManagerV2 = self._sender._txn_manager
        if resp.error_code == 0:
            txn.next_epoch(resp.producer_id, resp.producer_epoch)
            txn.complete_transaction()
            return None
        if resp.error_code in _FENCED:
            raise kafka.ProducerFenced()
        if resp.error_code == kafka.ConcurrentTransactions.errno:
            return MARKERS_BACKOFF_S
        result: float | None = super().handle_response(resp)
        return result


class ProduceV2Handler(SendProduceReqHandler):
    """Produce v12: the partitions join the transaction on the way."""

    def create_request(self) -> ProduceRequest:
        topics: dict[str, list[tuple[int, bytes]]] = collections.defaultdict(list)
        for tp, batch in self._batches.items():
            topics[tp.topic].append((tp.partition, batch.get_data_buffer()))
        return ProduceRequest(self._sender._txn_manager.transactional_id, self._sender._acks,
                              self._sender._request_timeout_ms, list(topics.items()))

    def handle_response(self, response: Any) -> None:
        for topic, partitions, _ in response.responses:
            for index, code, offset, append_time, log_start, _, _, _ in partitions:
                batch = self._batches.get(TopicPartition(topic, index))
                if batch is not None:
                    self._settle(batch, for_code(code), offset, append_time, log_start)

    def _settle(self, batch: Any, error: type[kafka.BrokerResponseError], offset: int,
                append_time: int, log_start: int) -> None:
        if error is kafka.NoError or error is kafka.DuplicateSequenceNumber:
            batch.done(offset, append_time, log_start)
        elif error.retriable:
            if getattr(error, "invalid_metadata", False):
                self._client.force_metadata_update()
            self._to_reenqueue.append(batch)
        elif error.errno in _FENCED:
            batch.failure(exception=kafka.ProducerFenced())
        elif error is kafka.TopicAuthorizationFailedError:
            batch.failure(exception=error(batch.tp.topic))
        else:
            # TRANSACTION_ABORTABLE among them: the committer aborts and tries again.
            batch.failure(exception=error())


class SenderV2(GroupFencedSender):
    """The sender under transactions v2: its own InitProducerId, Produce and EndTxn."""

    offset_commit_max_version = 5
    concurrent_backoff_s = MARKERS_BACKOFF_S

    async def _do_init_pid(self, node_id: int) -> bool:
        result: bool = await InitProducerIdHandler(self).do(node_id)
        return result

    async def _send_produce_req(self, node_id: int, batches: dict) -> None:
        await ProduceV2Handler(self, batches).do(node_id)
        self._in_flight.remove(node_id)
        for tp in batches:
            self._muted_partitions.remove(tp)

    async def _do_txn_commit(self, commit_result: Any) -> None:
        await self._message_accumulator.flush_for_commit()
        txn = self._txn_manager
        if txn.is_empty_transaction():  # nothing was sent: nothing started on the broker
            txn.complete_transaction()
            return
        node_id = await self._find_coordinator(CoordinationType.TRANSACTION,
                                               txn.transactional_id)
        await EndTxnV2Handler(self, commit_result).do(node_id)
