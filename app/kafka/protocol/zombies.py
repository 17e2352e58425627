"""Fencing a departed replica's open transactions.

With transactional ids per pod (``{prefix}-{pod}-{n}``) a partition's new owner never
initialises the previous owner's id, so a transaction that owner left open with the
partition's offsets in it (a replica paused past its session timeout) holds the
partition, ``require_stable`` answering UNSTABLE_OFFSET_COMMIT, until the transaction
timeout aborts it. ``fence_departed`` ends such transactions as the departed replica
would on its restart: one InitProducerId on its id bumps the epoch and aborts the open
transaction, and the old producer, should it wake, is fenced.

A transaction is fenced only if all of these hold, checked in this order (a pod that
joins the group after the list was taken cannot be in it):
- its coordinator lists it as Ongoing (ListTransactions, asked of every broker: each
  answers for the ids it coordinates), and its id has the prefix;
- the pod its id names is no member of the group (DescribeGroups: a member's client id
  is ``txingest-{pod}``). A live member's id is never fenced. An id of the release
  before, per input partition (``{prefix}-{topic}-{partition}``), is fenced only for a
  partition the caller waits on: it is the caller's partition now. A redrive job's id
  (``{prefix}-redrive-{job}``) is never a pod's;
- it holds what the caller waits on, as DescribeTransactions lists its partitions: the
  group's ``__consumer_offsets`` partition; or a dedup changelog partition whose stable
  offset it holds back; or, swept after a rebalance, output topics' partitions and no
  offsets (under transactions v1 a replica killed before its offsets went leaves
  nothing for ``require_stable`` to wait on).

``fence_own`` ends what this pod's previous life left open: pod names are unique among
live replicas, so an Ongoing transaction under this pod's name is no one's now.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from aiokafka import errors as kafka
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.protocol.admin import DescribeGroupsRequest
from aiokafka.protocol.transaction import InitProducerIdRequest
from aiokafka.structs import TopicPartition

from app.kafka.protocol.errors import for_code
from app.kafka.protocol.txn_state_messages import (
    ONGOING,
    DescribeTransactionsRequest,
    ListTransactionsRequest,
)

MEMBER_CLIENT_ID_PREFIX = "txingest-"  # app/kafka/clients.py: the consumer's client id
OFFSETS_TOPIC = "__consumer_offsets"
REDRIVE = "redrive-"  # app/redrive/job.py
FIRST_BACKOFF_S, LONGEST_BACKOFF_S = 0.01, 0.5
_MOVED = (kafka.NotCoordinatorError, kafka.CoordinatorNotAvailableError)
_WAIT = (kafka.ConcurrentTransactions, kafka.CoordinatorLoadInProgressError)


class GroupUnknown(kafka.KafkaError):
    """The group's members could not be told: nothing is fenced."""


@dataclass(frozen=True, slots=True)
class OpenTransaction:
    transactional_id: str
    coordinator: int  # the broker that listed it


Holds = Callable[[dict[str, list[int]]], bool]  # a transaction's partitions by topic


async def fence_departed(client: AIOKafkaClient, group_id: str, prefix: str, *,
                         waiting: Collection[TopicPartition], transaction_timeout_ms: int,
                         holding: Holds | None = None,
                         timeout_s: float = 10.0) -> list[str]:
    """Fence the open transactions of replicas that left the group (see the module's
    docstring); ``waiting``: the caller's input partitions that stay unsettled;
    ``holding``: which of them to fence by what they hold (None: the group's offsets).
    Return the ids fenced, each once its transaction is aborted."""
    deadline = time.monotonic() + timeout_s
    listed = await ongoing_transactions(client, prefix)
    if not listed:
        return []
    pods = await member_pods(client, group_id)
    candidates = [txn for txn in listed
                  if departed(txn.transactional_id, prefix, pods, waiting)]
    if not candidates:
        return []
    holds = holding or await _offsets_of(client, group_id)
    fenced = []
    for txn in await holders(client, candidates, holds):
        await fence(client, txn, transaction_timeout_ms, deadline)
        fenced.append(txn.transactional_id)
    return fenced


async def fence_own(client: AIOKafkaClient, prefix: str, pod: str, *,
                    transaction_timeout_ms: int, timeout_s: float = 10.0) -> list[str]:
    """Fence the Ongoing transactions of ids ``{prefix}-{pod}-{n}``: what this pod's
    previous life left open on slots its new life may never take again."""
    deadline, ours = time.monotonic() + timeout_s, f"{prefix}-{pod}-"
    fenced = []
    for txn in await ongoing_transactions(client, f"{prefix}-{pod}"):
        slot = txn.transactional_id[len(ours):]
        if txn.transactional_id.startswith(ours) and slot.isascii() and slot.isdigit():
            await fence(client, txn, transaction_timeout_ms, deadline)
            fenced.append(txn.transactional_id)
    return fenced


def departed(transactional_id: str, prefix: str, live_pods: Collection[str],
             waiting: Collection[TopicPartition]) -> bool:
    """Whether the id is ours and its owner has left (the module's second rule)."""
    if not transactional_id.startswith(f"{prefix}-"):
        return False
    owner, _, slot = transactional_id[len(prefix) + 1:].rpartition("-")
    if not owner or not (slot.isascii() and slot.isdigit()) or owner.startswith(REDRIVE):
        return False
    if owner in {tp.topic for tp in waiting}:  # per input partition: the release before
        return TopicPartition(owner, int(slot)) in waiting
    return owner not in live_pods


async def ongoing_transactions(client: AIOKafkaClient, prefix: str) -> list[OpenTransaction]:
    """Every broker's Ongoing transactions whose id has the prefix."""
    pattern = f"\\Q{prefix}-\\E.*"  # Java's quoting; brokers before v2 send all
    found = []
    for broker in sorted(client.cluster.brokers(), key=lambda b: b.nodeId):
        response = await client.send(broker.nodeId, ListTransactionsRequest(
            [ONGOING], id_pattern=pattern))
        if response.error_code:
            raise for_code(response.error_code)(f"ListTransactions on broker {broker.nodeId}")
        found += [OpenTransaction(txn_id, broker.nodeId)
                  for txn_id, _, state, _ in response.transaction_states
                  if state == ONGOING and txn_id.startswith(f"{prefix}-")]
    return found


async def member_pods(client: AIOKafkaClient, group_id: str) -> set[str]:
    """The pods of the group's members now, from their client ids."""
    node = await client.coordinator_lookup(CoordinationType.GROUP, group_id)
    response = await client.send(node, DescribeGroupsRequest([group_id]))
    [(error_code, _, state, _, _, members, *_)] = response.groups
    if error_code:
        raise for_code(error_code)(f"DescribeGroups {group_id}")
    if not members:  # the caller is a member: an empty group means the answer is wrong
        raise GroupUnknown(f"group {group_id} lists no members (state {state})")
    return {client_id[len(MEMBER_CLIENT_ID_PREFIX):] for _, client_id, *_ in members
            if client_id.startswith(MEMBER_CLIENT_ID_PREFIX)}


def partitions_held(partitions: Collection[TopicPartition]) -> Holds:
    """Fence what holds any of these partitions."""
    return lambda held: any(tp.partition in held.get(tp.topic, ()) for tp in partitions)


def written_without_offsets(topics: Collection[str]) -> Holds:
    """Fence what wrote to these topics and holds no offsets: nothing ``require_stable``
    waits on, yet it holds their last stable offsets back."""
    return lambda held: OFFSETS_TOPIC not in held and any(topic in held for topic in topics)


async def _offsets_of(client: AIOKafkaClient, group_id: str) -> Holds:
    partition = await offsets_partition(client, group_id)
    return lambda held: OFFSETS_TOPIC in held and (
        partition is None or partition in held[OFFSETS_TOPIC])


async def holders(client: AIOKafkaClient, candidates: list[OpenTransaction],
                  holds: Holds) -> list[OpenTransaction]:
    """Those still Ongoing with a partition that ``holds`` wants in them."""
    by_node: dict[int, list[OpenTransaction]] = collections.defaultdict(list)
    for txn in candidates:
        by_node[txn.coordinator].append(txn)
    found = []
    for node, txns in sorted(by_node.items()):
        response = await client.send(node, DescribeTransactionsRequest(
            [txn.transactional_id for txn in txns]))
        for code, txn_id, state, _, _, _, _, topics, _ in response.transaction_states:
            held = {topic: list(partitions) for topic, partitions, _ in topics}
            if code == 0 and state == ONGOING and holds(held):
                found.append(OpenTransaction(txn_id, node))
    return found


async def offsets_partition(client: AIOKafkaClient, group_id: str) -> int | None:
    """The group's __consumer_offsets partition, as Kafka places it; None when the
    topic's metadata is not given (no Describe on it): then any partition counts."""
    await client.add_topic(OFFSETS_TOPIC)
    partitions = client.cluster.partitions_for_topic(OFFSETS_TOPIC)
    return group_partition(group_id, len(partitions)) if partitions else None


def group_partition(group_id: str, count: int) -> int:
    """Kafka's ``Utils.abs(groupId.hashCode()) % count``: Math.abs, with
    Integer.MIN_VALUE taken as 0 (not the partitioner's bit mask)."""
    code = java_string_hash(group_id)
    return (0 if code == -2**31 else abs(code)) % count


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode`` (over UTF-16 code units): a signed 32-bit int."""
    units = text.encode("utf-16-be")
    value = 0
    for index in range(0, len(units), 2):
        value = (value * 31 + int.from_bytes(units[index:index + 2], "big")) & 0xFFFFFFFF
    return value - 2**32 if value >= 2**31 else value


async def fence(client: AIOKafkaClient, txn: OpenTransaction, transaction_timeout_ms: int,
                deadline: float) -> None:
    """InitProducerId on the id until it answers: the open transaction is aborted (the
    coordinator answers CONCURRENT_TRANSACTIONS while it writes the markers)."""
    node, backoff = txn.coordinator, FIRST_BACKOFF_S
    while True:
        response = await client.send(node, InitProducerIdRequest(
            txn.transactional_id, transaction_timeout_ms))
        error = for_code(response.error_code)
        if error is kafka.NoError:
            return
        if issubclass(error, _MOVED):
            node = await client.coordinator_lookup(
                CoordinationType.TRANSACTION, txn.transactional_id)
        elif not issubclass(error, _WAIT):
            raise error(f"InitProducerId {txn.transactional_id}")
        if time.monotonic() + backoff > deadline:
            raise kafka.KafkaTimeoutError(
                f"fencing {txn.transactional_id}: its abort did not complete in time")
        await asyncio.sleep(backoff)
        backoff = min(LONGEST_BACKOFF_S, backoff * 2)
