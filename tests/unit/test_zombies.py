"""The pure rules of app/kafka/protocol/zombies.py: whose transactional id is whose,
and where Kafka keeps a group's offsets. On the broker: tests/integration/test_zombie_fencing.py."""

from __future__ import annotations

import pytest
from aiokafka.structs import TopicPartition

from app.kafka.protocol.zombies import departed, group_partition, java_string_hash

LIVE = {"txingest-7f9c-abcde", "pod-b"}
WAITING = [TopicPartition("files", 3)]


@pytest.mark.parametrize("transactional_id, gone", [
    ("g-pod-a-0", True),                 # a pod no longer in the group
    ("g-pod-b-0", False),                # a live member's: never
    ("g-pod-b-17", False),
    ("g-txingest-7f9c-abcde-2", False),  # pod names with dashes
    ("g-txingest-7f9c-zzzzz-2", True),
    ("g-files-3", True),                 # per partition (the release before), the caller's
    ("g-files-4", False),                # per partition, someone else's partition
    ("g2-pod-a-0", False),               # another prefix
    ("g-pod-a", False),                  # no slot number
    ("g-pod-a-x", False),
    ("g-pod-a-٣", False),                # a digit, but not an ASCII one
    ("g-redrive-2026-12-07", False),     # a redrive job's id, though it ends in digits
    ("g--0", False),                     # no pod
    ("g-0", False),
])
def test_departed_names_the_ids_of_pods_gone_from_the_group(transactional_id, gone):
    assert departed(transactional_id, "g", LIVE, WAITING) is gone


@pytest.mark.parametrize("text, java", [
    # String.hashCode() as Kafka's JVM computes it (java 17, checked by hand)
    ("hello", 99162322),
    ("fence-group-35b448609d", -645577433),
    ("polygenelubricants", -2**31),
    ("😀x", 54959989),                  # UTF-16 code units: a surrogate pair
    ("", 0),
])
def test_the_hash_is_java_s(text, java):
    assert java_string_hash(text) == java


def test_the_group_s_offsets_partition_is_kafka_s():
    # Seen on a 4.4.0 broker with 8 offsets partitions: the group's transaction held
    # __consumer_offsets partition 1 (a bit mask would say 7).
    assert group_partition("fence-group-35b448609d", 8) == 1
    assert group_partition("polygenelubricants", 50) == 0  # Utils.abs(MIN_VALUE) is 0
    assert group_partition("hello", 50) == 99162322 % 50
