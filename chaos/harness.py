"""The parts a chaos run is made of: its tiers, topics, the paced feeder of input
URLs, the watcher of the group's committed offsets, and the copiers' settings.
chaos/run.py puts them together.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from chaos import logread
from chaos.faults import Copier, Plan
from chaos.netfaults import KINDS as NET_KINDS
from chaos.workload import Workload
from chaos.workload_csv import CSV_COLUMNS
from tools import kafka_io, local_cluster

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "results" / "chaos"  # git-ignored: results change every run
LIVENESS_S = 120.0
SESSION_TIMEOUT_MS = 6000
SHUTDOWN_TIMEOUT_S = 10
TERM_TIMEOUT_S = 60.0       # SHUTDOWN_TIMEOUT_S, closing the consumer, and a busy machine
STALL_S = 300.0             # no input committed for this long: stop the run, FAIL
READ_TIMEOUT_S = 2.0        # the copiers' download read timeout; a "stall" outlasts it
COPIERS = 3
# Most NDJSON and CSV files of the workload pass it (up to 50 transactions of ~150 bytes):
# they are spooled and streamed through their transactions under every fault.
SPOOL_THRESHOLD_BYTES = 4096
# Verdicts that only a wrong copier produces (not a harness or liveness problem).
RECORD_LEVEL = ("duplicates", "lost", "altered", "unexpected_dlq", "uncommitted_inputs",
                "aborted_visible", "invisible_committed", "torn", "order_violations")


@dataclass(frozen=True)
class Tier:
    inputs: int
    feed_s: float               # publish the input over about this long
    max_lag: int                # and hold back while the group is this far behind
    plan: Plan
    input_partitions: int = 8
    output_partitions: int = 6
    dlq_partitions: int = 2
    abort_rate: float = 0.05
    brokers: int = 1            # 3: a KRaft cluster, replication 3, min ISR 2
    dedup: str = "url"          # DEDUP of every copier
    repeat_rate: float = 0.25   # share of files published again, 1-2 more times
    group_commit: int = 32      # TRANSACTION_MAX_RECORDS of copier 0 (the others: 1)
    spooled: bool = False       # files above SPOOL_THRESHOLD_BYTES (most NDJSON, CSV) spool

    def copier_settings(self, index: int) -> dict[str, str]:
        """What differs between copiers: the first one commits in groups."""
        records = self.group_commit if index == 0 else 1
        return {"TRANSACTION_MAX_RECORDS": str(records),
                "PREFETCH_PER_PARTITION": str(max(8, records))}
    network: bool = False       # copiers reach the brokers through Toxiproxy (net_* faults)


TIERS = {
    # CI: a few thousand inputs, >= 10 kills, 2 SIGTERMs, a zombie, a broker restart
    # (of one node of three: a lone broker's kill -9 can lose transaction state, README).
    "ci": Tier(inputs=4000, feed_s=150, max_lag=400,
               plan=Plan(kills=12, terms=2, zombies=2, broker_restarts=1, bursts=3,
                         gap=(2.0, 5.0)),
               brokers=3, spooled=True),
    # Not run in CI: 100k inputs, every copier killed >= 3 times, 3 broker restarts.
    "full": Tier(inputs=100_000, feed_s=2000, max_lag=1500,
                 plan=Plan(kills=15, terms=6, zombies=3, broker_restarts=3, bursts=8,
                           kill_all=2, kill_rounds=3, gap=(6.0, 20.0),
                           extra=(("kill", 6), ("term", 2), ("burst", 2), ("zombie", 1),
                                  ("kill_all", 0.5))),
                 brokers=3, spooled=True),
    # make chaos-net: fewer process faults, mixed with every network fault kind
    # (chaos/netfaults.py) twice; copiers reach the cluster only through proxies. The
    # input is fed over about as long as the planned faults last, so they meet work.
    "net": Tier(inputs=3000, feed_s=270, max_lag=400,
                plan=Plan(kills=4, terms=2, zombies=1, broker_restarts=1, bursts=2,
                          gap=(2.0, 4.0), net=tuple((kind, 2) for kind in NET_KINDS),
                          extra=(("kill", 2), ("term", 1), ("net_latency", 1),
                                 ("net_reset", 1), ("net_bandwidth", 1))),
                brokers=3, network=True),
    # CI as well, shorter: the same faults with DEDUP=content.
    "ci-content": Tier(inputs=1500, feed_s=60, max_lag=300,
                       plan=Plan(kills=6, terms=1, zombies=1, broker_restarts=1, bursts=1,
                                 gap=(2.0, 5.0)),
                       brokers=3, dedup="content"),
    # For tests: a minute against an existing broker (no broker faults there).
    "smoke": Tier(inputs=300, feed_s=15, max_lag=150,
                  plan=Plan(kills=3, terms=1, zombies=0, broker_restarts=0, bursts=1,
                            gap=(1.0, 2.5))),
}


def say(line: str) -> None:
    print(line, flush=True)


@dataclass
class Progress:
    fed: int = 0
    lag: int | None = None
    committed: int = 0
    feeding_done: bool = False
    advanced_at: float = dataclasses.field(default_factory=time.monotonic)
    # The group's committed offsets only ever grow, whatever the copiers do; a
    # partition seen lower than before means the broker forgot commits (diagnostic:
    # whatever follows, e.g. duplicates, is then not the copiers' doing).
    highest: dict[int, int] = dataclasses.field(default_factory=dict)
    regressions: list[tuple[float, int, int, int]] = dataclasses.field(default_factory=list)

    @property
    def stalled(self) -> bool:
        """Work is waiting and nothing was committed for STALL_S: the run cannot finish."""
        return self.lag != 0 and time.monotonic() - self.advanced_at > STALL_S


async def create_topics(bootstrap: str, tier: Tier, run_id: str) -> dict[str, str]:
    names = {"input": f"chaos-{run_id}-in", "output": f"chaos-{run_id}-out",
             "dlq": f"chaos-{run_id}-dlq", "group": f"chaos-{run_id}-group",
             "dedup": f"chaos-{run_id}-dedup"}  # created by the copiers
    replicas = min(tier.brokers, local_cluster.REPLICATION)
    configs = {"min.insync.replicas": str(min(replicas, local_cluster.MIN_ISR))}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(names["input"], tier.input_partitions, replicas, topic_configs=configs),
            NewTopic(names["output"], tier.output_partitions, replicas, topic_configs=configs),
            NewTopic(names["dlq"], tier.dlq_partitions, replicas, topic_configs=configs),
        ])
    finally:
        await admin.close()
    for topic in ("input", "output", "dlq"):  # until every partition has a leader
        await logread.partitions(bootstrap, names[topic])
    return names


async def feed(bootstrap: str, topic: str, workload: Workload, base_url: str, tier: Tier,
               progress: Progress) -> None:
    """Publish every input, paced, held back by the group's lag; rides broker restarts.

    A send whose outcome is unknown (the broker died) is sent again, so an input
    may appear twice in the input topic: the checker takes the input topic as it
    is, and only requires each of its records to have exactly one outcome.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                linger_ms=5, request_timeout_ms=15_000)
    await producer.start()
    order = workload.feed_order(tier.inputs, tier.repeat_rate)
    rate = len(order) / tier.feed_s
    started = time.monotonic()
    try:
        position = 0
        while position < len(order):
            due = started + position / rate
            if time.monotonic() < due:
                await asyncio.sleep(due - time.monotonic())
            if progress.lag is None or progress.lag > tier.max_lag:
                await asyncio.sleep(0.2)
                started += 0.2  # pacing resumes where it stopped, not with a burst
                continue
            chunk = order[position:position + max(1, int(rate))]
            try:
                # Keyed by the file, as the service asks of its producers: every copy of a
                # file lands in the file's partition.
                futures = [await producer.send(topic, workload.input_value(n, base_url),
                                               key=f"f/{n}".encode(),
                                               partition=n % tier.input_partitions)
                           for n in chunk]
                await asyncio.gather(*futures)
            except (KafkaError, OSError, TimeoutError) as exc:
                say(f"  feeder: {exc!r}; sending again")
                await asyncio.sleep(1)
                continue
            position += len(chunk)
            progress.fed = position
    finally:
        await producer.stop()
        progress.feeding_done = True


async def watch(view: logread.GroupView, progress: Progress, stop: asyncio.Event,
                started: float) -> None:
    while not stop.is_set():
        found = await view.offsets()
        if found is None:
            progress.lag = None
        else:
            committed, end = found
            for p, offset in committed.items():
                before = progress.highest.get(p, -1)
                if offset < before:
                    progress.regressions.append(
                        (round(time.monotonic() - started, 1), p, before, offset))
                    say(f"  broker: the group's committed offset of input partition {p} went "
                        f"back from {before} to {offset}")
                progress.highest[p] = max(before, offset)
            progress.lag = sum(end[p] - committed.get(p, 0) for p in end)
            if sum(committed.values()) > progress.committed:
                progress.advanced_at = time.monotonic()
            progress.committed = sum(committed.values())
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass


async def report_progress(progress: Progress, copiers: list[Copier], tier: Tier,
                          stop: asyncio.Event, started: float) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 15)
        except TimeoutError:
            alive = sum(1 for c in copiers if c.alive and not c.paused)
            say(f"[{time.monotonic() - started:6.1f}s] progress  fed {progress.fed}/{tier.inputs}"
                f", committed {progress.committed}, lag {progress.lag}, copiers running {alive}")


async def wait_stable(bootstrap: str, topics: list[str], timeout: float) -> bool:
    """Until every partition's last stable offset equals its high watermark."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            stable = all([
                await kafka_io.end_offsets(bootstrap, t, "read_committed")
                == await kafka_io.end_offsets(bootstrap, t, "read_uncommitted")
                for t in topics])
        except KafkaError:
            stable = False
        if stable:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)


def copier_env(bootstrap: str, names: dict[str, str], tier: Tier, mode: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "INPUT_TOPIC": names["input"],
        "OUTPUT_TOPIC": names["output"],
        "DLQ_TOPIC": names["dlq"],
        "GROUP_ID": names["group"],
        "HTTP_PORT": "0",
        "DOWNLOAD_ALLOW_PRIVATE_NETWORKS": "true",
        "SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
        "TEST_ABORT_RATE": str(tier.abort_rate),
        "MAX_ATTEMPTS": "50",
        "RETRY_BACKOFF_S": "0.05",
        "RETRY_BACKOFF_MAX_S": "1",
        "DOWNLOAD_CONNECT_TIMEOUT_S": "5",
        "DOWNLOAD_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
        "DOWNLOAD_TOTAL_TIMEOUT_S": "30",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        "BROKEN_MODE": mode,
        "DEDUP": tier.dedup,
        "DEDUP_TOPIC": names["dedup"],
        "DEDUP_REPLICATION_FACTOR": str(tier.brokers),
        "CSV_COLUMNS": CSV_COLUMNS,
        **({"SPOOL_THRESHOLD_BYTES": str(SPOOL_THRESHOLD_BYTES)} if tier.spooled else {}),
    }


