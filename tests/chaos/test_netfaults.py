"""The network faults' scheduling and proxy logic (chaos/netfaults.py, the net hooks of
chaos/faults.py), against stand-in copiers and a recording stand-in for Toxiproxy's API
(no Kafka, no proxy)."""

from __future__ import annotations

import itertools
import random
import sys
from pathlib import Path

from chaos import netfaults
from chaos.faults import Copier, Plan, Scheduler
from tests.chaos.test_faults import FAKE
from tools import local_cluster

NET_PLAN = Plan(kills=1, terms=0, zombies=1, broker_restarts=0, bursts=1,
                gap=(0.01, 0.02), restart=(0.01, 0.02), long_restart=0.0,
                net=tuple((kind, 2) for kind in netfaults.KINDS))


def recording_handlers(done: list[str], skip: str | None = None) -> dict:
    def handler(kind: str):
        async def run(s: Scheduler) -> bool:
            done.append(kind)
            return kind != skip
        return run
    return {kind: handler(kind) for kind in netfaults.KINDS}


def scheduler(tmp_path: Path, seed: int, handlers: dict | None, plan: Plan = NET_PLAN
              ) -> Scheduler:
    copiers = [Copier(f"c{i}", [sys.executable, "-c", FAKE], {}, tmp_path) for i in range(3)]
    return Scheduler(random.Random(seed), plan, copiers, partitions=4, session_timeout_s=0.3,
                     term_timeout_s=10, broker_kill=None, broker_restart=None,
                     burst=lambda seconds: None, log=lambda line: None, net=handlers)


def test_network_faults_join_the_seeded_plan_and_a_cutoff_never_comes_first(tmp_path):
    a = scheduler(tmp_path, 1, recording_handlers([]))
    assert a.events == scheduler(tmp_path, 1, recording_handlers([])).events
    for seed in range(40):
        events = scheduler(tmp_path, seed, recording_handlers([])).events
        assert all(events.count(kind) == 2 for kind in netfaults.KINDS), events
        assert events[0] not in ("net_cutoff", "zombie"), events
    # Without handlers (another tier) the plan has no network faults.
    assert not any(e.startswith("net_") for e in scheduler(tmp_path, 1, None).events)


async def test_every_planned_network_fault_is_carried_out_and_counted(tmp_path):
    done: list[str] = []
    s = scheduler(tmp_path, 5, recording_handlers(done, skip="net_bandwidth"))
    s.first()
    try:
        await s.run(keep_going=lambda: False)
    finally:
        s.stop_all()
    assert sorted(done) == sorted(netfaults.KINDS * 2)
    # Each fault's start is kept (the report's windows), back-to-back ones too.
    assert sorted(k for _, k in s.fault_starts if k.startswith("net_")) == sorted(done)
    assert s.counts.net == {kind: 2 for kind in netfaults.KINDS if kind != "net_bandwidth"}


class RecordingToxiproxy:
    """Keeps the state Toxiproxy would: toxics and disabled proxies."""

    def __init__(self) -> None:
        self.toxics: dict[str, set[str]] = {}
        self.disabled: set[str] = set()
        self.seen: dict[str, set[str]] = {}       # every toxic a link ever had
        self.seen_disabled: set[str] = set()

    async def add_toxic(self, proxy, name, kind, stream, **attributes):
        assert name not in self.toxics.setdefault(proxy, set())
        self.toxics[proxy].add(name)
        self.seen.setdefault(proxy, set()).add(kind)

    async def remove_toxic(self, proxy, name):
        self.toxics[proxy].remove(name)

    async def set_enabled(self, proxy, enabled):
        (self.disabled.discard if enabled else self.disabled.add)(proxy)
        if not enabled:
            self.seen_disabled.add(proxy)


def net(toxi: RecordingToxiproxy, brokers: int = 3) -> netfaults.NetFaults:
    ports = itertools.count(20000)
    listeners = netfaults.listeners(3, brokers, lambda: next(ports))
    faults = netfaults.NetFaults(toxi, listeners, 4)
    faults.attach("127.0.0.1:1", lambda p: f"txn-{p}")

    async def coordinator(transactional_id: str) -> int:
        return 2
    faults.coordinator = coordinator  # type: ignore[method-assign]
    return faults


def test_each_copier_bootstraps_only_through_its_own_proxies_on_distinct_ports():
    faults = net(RecordingToxiproxy())
    ports = [p for li in faults.listeners for p in li.ports + li.advertised]
    assert len(ports) == len(set(ports)) == 18
    for c in range(3):
        assert faults.bootstrap_for(c) == ",".join(
            f"127.0.0.1:{p}" for p in faults.listeners[c].advertised)
    props = local_cluster.node_properties(2, [9001, 9002, 9003], [9101, 9102, 9103],
                                          faults.listeners)
    for c, li in enumerate(faults.listeners):
        assert f"C{c}://127.0.0.1:{li.ports[1]}" in props["listeners"].split(",")
        assert f"C{c}://127.0.0.1:{li.advertised[1]}" in props["advertised.listeners"].split(",")
        assert f"C{c}:PLAINTEXT" in props["listener.security.protocol.map"].split(",")
    assert props["advertised.listeners"].startswith("PLAINTEXT://127.0.0.1:9002,")
    assert "inter.broker.listener.name" not in props  # stays local_kafka's PLAINTEXT


async def test_a_cutoff_cuts_only_the_victim_and_reconnects_it(tmp_path):
    toxi = RecordingToxiproxy()
    faults = net(toxi)
    s = scheduler(tmp_path, 3, None)
    for c in s.copiers[1:]:
        s.active.append(c)
    for c in s.copiers:
        c.start()
    try:
        for _ in range(4):
            assert await faults.cutoff(s)
    finally:
        s.stop_all()
    victims = {d["what"].split(":")[0] for d in faults.done}
    cut = toxi.seen_disabled | {link for link, kinds in toxi.seen.items() if "timeout" in kinds}
    assert cut == {netfaults.proxy_name(int(v[1:]), b) for v in victims for b in range(3)}
    assert not toxi.disabled and not any(toxi.toxics.values())
    assert all(d["taken_over"] for d in faults.done)


async def test_broker_faults_hit_every_copiers_links_to_the_chosen_brokers_then_clear(
        tmp_path, monkeypatch):
    toxi = RecordingToxiproxy()
    faults = net(toxi)
    s = scheduler(tmp_path, 4, None)
    monkeypatch.setattr(netfaults, "LOST_RESPONSES_HOLD_S", (0.0, 0.01))
    monkeypatch.setattr(netfaults, "LATENCY_HOLD_S", (0.0, 0.01))
    assert await faults.lost_responses(s)
    assert set(toxi.seen) == {netfaults.proxy_name(c, 2) for c in range(3)}
    assert await faults.latency_all(s)
    assert {link for link, kinds in toxi.seen.items() if "latency" in kinds} == {
        netfaults.proxy_name(c, b) for c in range(3) for b in range(3)}
    assert not any(toxi.toxics.values())
