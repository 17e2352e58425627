"""A 3-node KRaft Kafka cluster on this machine, for faults a single broker cannot take.

Each node is a combined broker and controller (static quorum of all nodes) in
``data/node-N``, started from the same jars as tools/local_kafka.py (the same
version too: ``$KAFKA_VERSION``, else the pinned one). Internal and
test topics get replication 3 and min.insync.replicas 2, like a production
cluster, so one node can be killed (kill -9) and restarted while the others keep
leading: the case Kafka's own transaction system tests bounce brokers in.

Why not the single broker: with one replica, every kill -9 ends in an unclean
leader recovery of the consumer-offsets partitions, and Kafka 4.4.0's group
coordinator then lost a group's committed offsets in 3 of 3 long chaos runs
("state machine ... out of sync with the underlying log"). See README.

    nodes = start(3, data)      # list of Broker, all ready
    bootstrap(nodes)            # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
    local_kafka.kill(nodes[1].data); local_kafka.restart(nodes[1].data)
    stop(data)                  # every node by its pid, then the data
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tools import local_kafka
from tools.local_kafka import Broker

REPLICATION = 3
MIN_ISR = 2


@dataclass(frozen=True)
class ClientListener:
    """An extra PLAINTEXT client listener on every node, advertised at another address
    (a fault-injecting proxy's): clients that bootstrap through it are told only the
    proxies' ports. Inter-broker and controller traffic stays on the direct listeners."""

    name: str               # listener name, e.g. "C0"
    ports: list[int]        # per node: where the broker listens
    advertised: list[int]   # per node: the port clients are told to connect to


def node_properties(node: int, ports: list[int], controller_ports: list[int],
                    client_listeners: Sequence[ClientListener] = ()) -> dict[str, str]:
    port, controller_port = ports[node - 1], controller_ports[node - 1]
    voters = ",".join(f"{i}@127.0.0.1:{c}" for i, c in enumerate(controller_ports, start=1))
    replicas, isr = str(min(REPLICATION, len(ports))), str(min(MIN_ISR, len(ports)))
    extra = "".join(f",{c.name}://127.0.0.1:{c.ports[node - 1]}" for c in client_listeners)
    advertised = "".join(f",{c.name}://127.0.0.1:{c.advertised[node - 1]}"
                         for c in client_listeners)
    protocols = "".join(f",{c.name}:PLAINTEXT" for c in client_listeners)
    return {
        "node.id": str(node),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
                     + extra,
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}" + advertised,
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT" + protocols,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": isr,
        "default.replication.factor": replicas,
        "min.insync.replicas": isr,
        "unclean.leader.election.enable": "false",
    }


def start(size: int, data: Path, timeout: float = 180,
          client_listeners: Sequence[ClientListener] = ()) -> list[Broker]:
    """Format and start ``size`` nodes in ``data`` (emptied first); wait for all.
    ``client_listeners``: extra client listeners (chaos/netfaults.py puts proxies there)."""
    data = data.resolve()
    shutil.rmtree(data, ignore_errors=True)
    version = local_kafka.kafka_version()
    jars = local_kafka.libs(version)
    ports = [local_kafka.free_port() for _ in range(size)]
    controller_ports = [local_kafka.free_port() for _ in range(size)]
    cluster_id = local_kafka.new_cluster_id()
    started: list[tuple[Broker, subprocess.Popen, int]] = []
    try:
        for node in range(1, size + 1):
            home = data / f"node-{node}"
            home.mkdir(parents=True)
            props = node_properties(node, ports, controller_ports, client_listeners)
            (home / "server.properties").write_text(local_kafka.server_properties(
                ports[node - 1], controller_ports[node - 1], home, props, version))
            (home / "log4j2.properties").write_text(
                local_kafka.LOG4J2.format(log=home / "server.log"))
            subprocess.run([*local_kafka.java(jars, home), "kafka.tools.StorageTool", "format",
                            "-t", cluster_id, "-c", str(home / "server.properties")],
                           check=True, stdout=subprocess.DEVNULL)
            (home / "broker.port").write_text(str(ports[node - 1]))
            (home / "broker.version").write_text(version)
        # All before waiting on any: a node is ready only once a quorum of voters is up.
        for node in range(1, size + 1):
            started.append(local_kafka.spawn(jars, data / f"node-{node}", ports[node - 1]))
        for broker, proc, log_from in started:
            local_kafka.wait_ready(broker, proc, timeout, log_from)
    except BaseException:
        stop(data)
        raise
    nodes = [broker for broker, _, _ in started]
    print(f"Kafka {version} cluster of {size} started at {bootstrap(nodes)} "
          f"(pids {' '.join(str(n.pid) for n in nodes)}, data {data})", file=sys.stderr)
    return nodes


def bootstrap(nodes: list[Broker]) -> str:
    return ",".join(node.bootstrap for node in nodes)


def node_dirs(data: Path) -> list[Path]:
    return sorted(data.resolve().glob("node-*"))


def stop(data: Path, remove: bool = True) -> None:
    """Stop every node by its pid (SIGTERM, then SIGKILL), then drop the data."""
    for home in node_dirs(data):
        local_kafka.stop(home, remove=False)
    if remove:
        shutil.rmtree(data, ignore_errors=True)
