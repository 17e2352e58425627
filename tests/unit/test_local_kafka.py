"""The local broker tool's pure parts (the broker itself runs in every integration test)."""

from __future__ import annotations

from tools import local_cluster, local_kafka


def test_local_broker_cluster_ids_never_look_like_flags():
    ids = {local_kafka.new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids)


def test_cluster_nodes_share_one_quorum_and_replicate_everything_three_ways():
    ports, controllers = [9001, 9002, 9003], [9101, 9102, 9103]
    nodes = [local_cluster.node_properties(n, ports, controllers) for n in (1, 2, 3)]
    assert [p["node.id"] for p in nodes] == ["1", "2", "3"]
    assert {p["controller.quorum.voters"] for p in nodes} == {
        "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"}
    assert nodes[1]["listeners"] == "PLAINTEXT://127.0.0.1:9002,CONTROLLER://127.0.0.1:9102"
    for props in nodes:
        # One node down leaves two in sync: writes continue, no unclean election.
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["transaction.state.log.replication.factor"] == "3"
        assert props["transaction.state.log.min.isr"] == "2"
        assert props["min.insync.replicas"] == "2"
        assert props["unclean.leader.election.enable"] == "false"
