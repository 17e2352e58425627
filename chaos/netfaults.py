"""Network faults between the copiers and the brokers, through Toxiproxy.

Topology: every broker has one extra client listener per copier (tools/
local_cluster.py ``ClientListener``), advertised at a proxy's port. Copier ``i``
bootstraps through its own proxies ``c<i>-b<n>``, and every metadata response
names only those, so it never bypasses them. The harness (feeder, watcher,
checker) and inter-broker and controller traffic use the direct listeners, so a
network fault hits only the copiers, and cutting one copier off cuts only it.

Fault kinds (each a handler for chaos/faults.py's scheduler, drawn from its rng):

- ``net_latency`` / ``net_latency_all``: every response from one broker (or from
  all) waits 0.5 to 5 s, for a few seconds;
- ``net_lost_responses``: responses from the broker that coordinates a partition's
  transactional id never arrive (``timeout`` toxic) for longer than the clients'
  request timeout: commits and sends time out, with an unknown outcome;
- ``net_reset``: connections to one broker (or all) are reset in the middle of
  traffic (``reset_peer``), again on every reconnect, for a few seconds;
- ``net_cutoff``: one copier loses every broker (its proxies refuse connections,
  or drop everything) while it keeps running, until the others hold all its
  partitions past the session timeout; then it is reconnected: a live zombie;
- ``net_bandwidth``: one broker's links are throttled to a few KB/s while
  transactions of up to 50 records each go through them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from aiokafka.client import CoordinationType

from chaos.faults import Copier, NetHandler, Scheduler
from chaos.toxiproxy import Toxiproxy
from tools import kafka_io
from tools.local_cluster import ClientListener

KINDS = ("net_latency", "net_latency_all", "net_lost_responses", "net_reset", "net_cutoff",
         "net_bandwidth")
LATENCY_MS = (500, 5000)
LATENCY_HOLD_S = (3.0, 8.0)
# Past aiokafka's default request_timeout_ms (40 s): a request really times out.
LOST_RESPONSES_HOLD_S = (42.0, 48.0)
RESET_AFTER_MS = (0, 1500)
RESET_HOLD_S = (2.0, 5.0)
BANDWIDTH_KBPS = (4, 32)
BANDWIDTH_HOLD_S = (6.0, 12.0)


def proxy_name(copier: int, broker: int) -> str:
    return f"c{copier}-b{broker}"


def listeners(copiers: int, brokers: int, free_port: Callable[[], int]) -> list[ClientListener]:
    """One client listener per copier on every broker, advertised at its proxy's port."""
    return [ClientListener(f"C{c}", [free_port() for _ in range(brokers)],
                           [free_port() for _ in range(brokers)]) for c in range(copiers)]


def draw(rng: random.Random, span: tuple[float, float]) -> float:
    return rng.uniform(*span)


class NetFaults:
    """The proxies of a run and the network fault handlers.

    The proxies are made before the cluster starts (so their ports are taken at
    once); :meth:`attach` then names the direct listener (the harness's, used to
    find a transaction coordinator) and the copiers' transactional ids, numbered
    from 0 to the input's partition count.
    """

    def __init__(self, toxi: Toxiproxy, client_listeners: list[ClientListener],
                 partitions: int) -> None:
        self.toxi = toxi
        self.listeners = client_listeners
        self.brokers = len(client_listeners[0].ports)
        self.partitions = partitions
        self.bootstrap = ""
        self.transactional_id: Callable[[int], str] = str
        self.done: list[dict[str, Any]] = []   # every fault carried out, for the report

    def attach(self, bootstrap: str, transactional_id: Callable[[int], str]) -> None:
        self.bootstrap = bootstrap
        self.transactional_id = transactional_id

    async def create_proxies(self) -> None:
        for c, listener in enumerate(self.listeners):
            for b in range(self.brokers):
                await self.toxi.create_proxy(proxy_name(c, b), listener.advertised[b],
                                             listener.ports[b])

    def bootstrap_for(self, copier: int) -> str:
        """Copier ``copier``'s bootstrap servers: its own proxies."""
        return ",".join(f"127.0.0.1:{p}" for p in self.listeners[copier].advertised)

    def handlers(self) -> dict[str, NetHandler]:
        return {"net_latency": self.latency_one, "net_latency_all": self.latency_all,
                "net_lost_responses": self.lost_responses, "net_reset": self.reset,
                "net_cutoff": self.cutoff, "net_bandwidth": self.bandwidth}

    def _links(self, brokers: list[int]) -> list[str]:
        """Every copier's proxy to each of ``brokers``."""
        return [proxy_name(c, b) for c in range(len(self.listeners)) for b in brokers]

    async def _hold(self, s: Scheduler, kind: str, links: list[str], toxics: list[tuple],
                    seconds: float, what: str) -> bool:
        """Add ``toxics`` ((name, type, stream, attributes)) to ``links`` for ``seconds``."""
        started = time.monotonic()
        s.note(kind, f"{what} for {seconds:.1f}s")
        added: list[tuple[str, str]] = []
        try:
            for link in links:
                for name, toxic, stream, attributes in toxics:
                    await self.toxi.add_toxic(link, name, toxic, stream, **attributes)
                    added.append((link, name))
            await asyncio.sleep(seconds)
        finally:
            for link, name in added:
                await self.toxi.remove_toxic(link, name)
        self.done.append({"kind": kind, "what": what, "links": links,
                          "held_s": round(time.monotonic() - started, 1)})
        s.note(kind, "removed")
        return True

    async def latency_one(self, s: Scheduler) -> bool:
        return await self._latency(s, "net_latency", [s.rng.randrange(self.brokers)])

    async def latency_all(self, s: Scheduler) -> bool:
        return await self._latency(s, "net_latency_all", list(range(self.brokers)))

    async def _latency(self, s: Scheduler, kind: str, brokers: list[int]) -> bool:
        ms = round(draw(s.rng, LATENCY_MS))
        return await self._hold(s, kind, self._links(brokers),
                                [("latency", "latency", "downstream", {"latency": ms})],
                                draw(s.rng, LATENCY_HOLD_S),
                                f"{ms} ms latency from broker(s) {_nodes(brokers)}")

    async def lost_responses(self, s: Scheduler) -> bool:
        producer = self.transactional_id(s.rng.randrange(self.partitions))
        broker = await self.coordinator(producer)
        return await self._hold(
            s, "net_lost_responses", self._links([broker]),
            [("lost", "timeout", "downstream", {"timeout": 0})],
            draw(s.rng, LOST_RESPONSES_HOLD_S),
            f"no responses from node {broker + 1}, transaction coordinator of {producer}")

    async def reset(self, s: Scheduler) -> bool:
        brokers = ([s.rng.randrange(self.brokers)] if s.rng.random() < 0.5
                   else list(range(self.brokers)))
        after = round(draw(s.rng, RESET_AFTER_MS))
        return await self._hold(s, "net_reset", self._links(brokers),
                                [("reset", "reset_peer", "upstream", {"timeout": after})],
                                draw(s.rng, RESET_HOLD_S),
                                f"connections to broker(s) {_nodes(brokers)} reset "
                                f"{after} ms into each")

    async def bandwidth(self, s: Scheduler) -> bool:
        broker = s.rng.randrange(self.brokers)
        rate = s.rng.randint(*BANDWIDTH_KBPS)
        toxics = [(f"bw-{stream}", "bandwidth", stream, {"rate": rate})
                  for stream in ("upstream", "downstream")]
        return await self._hold(s, "net_bandwidth", self._links([broker]), toxics,
                                draw(s.rng, BANDWIDTH_HOLD_S),
                                f"node {broker + 1}'s links throttled to {rate} KB/s")

    async def cutoff(self, s: Scheduler) -> bool:
        """A live zombie: one copier loses every broker until the others took over."""
        live = [x for x in s.active if x.alive and not x.paused]
        if len(live) < 2:
            s.note("net_cutoff", "skipped: no other copier to take over")
            return False
        victim = s.rng.choice(live)
        others = [x for x in live if x is not victim]
        await victim.wait_consuming(60)
        refuse = s.rng.random() < 0.5   # else: connections stay open, nothing gets through
        links = [proxy_name(self._index(s, victim), b) for b in range(self.brokers)]
        marks = {x.name: x.log_size() for x in others}
        cut_at = time.monotonic()
        how = "connections refused" if refuse else "every packet dropped"
        s.note("net_cutoff", f"{victim.name} cut off from every broker ({how})")
        try:
            for link in links:
                if refuse:
                    await self.toxi.set_enabled(link, False)
                else:
                    await self.toxi.add_toxic(link, "cut", "timeout", "upstream", timeout=0)
            taken = await s.wait_taken_over(others, marks, cut_at)
            await asyncio.sleep(s.rng.uniform(0.2, 2.0))
        finally:
            for link in links:
                if refuse:
                    await self.toxi.set_enabled(link, True)
                else:
                    await self.toxi.remove_toxic(link, "cut")
        held = time.monotonic() - cut_at
        self.done.append({"kind": "net_cutoff", "what": f"{victim.name}: {how}", "links": links,
                          "held_s": round(held, 1), "taken_over": taken})
        s.note("net_cutoff", f"{victim.name} reconnected after {held:.1f}s")
        return True

    @staticmethod
    def _index(s: Scheduler, victim: Copier) -> int:
        return s.copiers.index(victim)

    async def coordinator(self, transactional_id: str) -> int:
        """The broker (0-based) coordinating ``transactional_id``, asked over the direct
        listener (a FindCoordinator request)."""
        node = await kafka_io.coordinator(self.bootstrap, CoordinationType.TRANSACTION,
                                          transactional_id)
        return node - 1   # local_cluster: node ids 1..n


def _nodes(brokers: list[int]) -> str:
    return ",".join(str(b + 1) for b in brokers)
