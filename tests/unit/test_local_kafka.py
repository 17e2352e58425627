"""The local broker tool's pure parts (the broker itself runs in every integration test)."""

from __future__ import annotations

import os

import pytest

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


def test_kafka_version_is_the_environments_choice_else_the_pinned_one(monkeypatch):
    monkeypatch.delenv("KAFKA_VERSION", raising=False)
    assert local_kafka.kafka_version() == local_kafka.pinned_version() == "4.4.0"
    monkeypatch.setenv("KAFKA_VERSION", "")
    assert local_kafka.kafka_version() == "4.4.0"
    monkeypatch.setenv("KAFKA_VERSION", " 3.9.1 ")
    assert local_kafka.kafka_version() == "3.9.1"


def test_a_kafka_version_that_is_no_version_is_refused_before_it_reaches_a_path(monkeypatch):
    for bad in ("latest", "3.9", "../../etc", "4.4.0/x", "4.4.0-SNAPSHOT"):
        monkeypatch.setenv("KAFKA_VERSION", bad)
        with pytest.raises(SystemExit, match="not a Kafka version"):
            local_kafka.kafka_version()


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_a_3x_broker_gets_no_settings_only_4x_knows(tmp_path):
    old = _props(local_kafka.server_properties(9092, 9093, tmp_path, {}, "3.9.1"))
    new = _props(local_kafka.server_properties(9092, 9093, tmp_path, {}, "4.4.0"))
    assert not [k for k in old if k.startswith("share.coordinator.")]
    assert new["share.coordinator.state.topic.replication.factor"] == "1"
    # Everything else is the same KRaft setup on both.
    assert {k: v for k, v in new.items() if not k.startswith("share.")} == old
    assert old["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert old["process.roles"] == "broker,controller"


def test_cluster_nodes_on_3x_drop_the_share_settings_but_keep_replication(tmp_path):
    props = local_cluster.node_properties(2, [9001, 9002, 9003], [9101, 9102, 9103])
    old = _props(local_kafka.server_properties(9002, 9102, tmp_path, props, "3.9.1"))
    assert not [k for k in old if k.startswith("share.")]
    assert old["transaction.state.log.min.isr"] == "2"
    assert old["node.id"] == "2"


def test_a_broker_reports_and_restarts_with_the_version_its_data_was_made_with(
        tmp_path, monkeypatch):
    monkeypatch.setenv("KAFKA_VERSION", "4.4.0")
    (tmp_path / "broker.pid").write_text(str(os.getpid()))  # a live pid stands in
    (tmp_path / "broker.port").write_text("9092")
    (tmp_path / "broker.version").write_text("3.9.1\n")
    broker = local_kafka.running(tmp_path)
    assert broker is not None and broker.version == "3.9.1"
    (tmp_path / "broker.version").unlink()  # a data dir from before versions were kept
    assert local_kafka.running(tmp_path).version == "4.4.0"
