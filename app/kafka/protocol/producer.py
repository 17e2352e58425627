"""aiokafka's producer, speaking the transaction protocol the cluster offers.

``TransactionalProducer`` commits its offsets with KIP-447 fencing (group_commit.py)
and, with ``transactions_v2``, runs each transaction in three round trips
(txn_v2.py). aiokafka builds its sender and transaction manager inside its
``__init__`` and offers no hook: the same objects are given the subclasses' methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from app.kafka.protocol.group_commit import GroupFencedSender
from app.kafka.protocol.offset_messages import GroupMetadata
from app.kafka.protocol.txn_v2 import SenderV2, TransactionManagerV2


class TransactionalProducer(AIOKafkaProducer):
    """``group_metadata`` is called when each offset commit is sent: usually
    ``functools.partial(consumer_group_metadata, consumer)``. Under transactions v2 the
    caller sends a transaction's offsets before its records (txn_v2.py says why)."""

    def __init__(self, *, group_metadata: Callable[[], GroupMetadata],
                 transactions_v2: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.transactions_v2 = transactions_v2
        self._sender.__class__ = SenderV2 if transactions_v2 else GroupFencedSender
        self._sender.group_metadata = group_metadata
        if transactions_v2:
            self._txn_manager.__class__ = TransactionManagerV2
