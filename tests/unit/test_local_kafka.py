"""The local broker tool's pure parts (the broker itself runs in every integration test)."""

from __future__ import annotations

import local_kafka


def test_local_broker_cluster_ids_never_look_like_flags():
    ids = {local_kafka.new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids)
