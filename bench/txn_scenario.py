"""Scenario TXN, the reference loop (issue 26): one producer's sequential per-record
transactions (begin, three records, one input offset with a real member's group
metadata, commit), on Kafka's Java client and in Python, on the same broker, in turn.

- ``txn_java``: kafka-clients 4.4.0 (bench/kstreams/.../TxnLoop.java, in the Kafka
  Streams peer's jar), ``retry.backoff.ms`` 5; transactions v2 where the cluster has it.
- ``txn_aiokafka``: plain aiokafka (bench/txn_loop.py), today's protocol.
- ``txn_new_layer``: bench/txn_loop.py with the producer class at ``NEW_LAYER``
  (``--txn-producer`` overrides it): the goal is this at least 1.0x the Java client.

Each run gets fresh one-partition topics; the client prints each commit's time and the
rates come from those (steady state: from the 10% to the 90% transaction). The gate is
exact: the group's committed offset is the number of transactions and read_committed
returns every (transaction, record) once.
"""

from __future__ import annotations

import os

import orjson

from bench import kstreams_peer
from bench.variant import Ctx, Variant
from bench.verdicts import percentile
from tools.kafka_io import Topics, committed_offsets, create_topics, delete_topics, read_all
from tools.proc import ChildProcess, python_module

# The service's producer (app/kafka/protocol/): transactions v2 where the cluster has it.
NEW_LAYER = "app.kafka.protocol.producer.TransactionalProducer"
RETRY_BACKOFF_MS = 5  # the Java client's tuned backoff (its default, 100 ms, is 10x slower)
RECORDS = 3
STEADY = (0.1, 0.9)


def variants(new_layer: str = NEW_LAYER) -> list[Variant]:
    def python(name: str, producer: str) -> Variant:
        return Variant(name, "txn_loop", cfg={"client": "python", "producer": producer,
                                              "retry_backoff_ms": RETRY_BACKOFF_MS})
    return [Variant("txn_java", "txn_loop", cfg={"client": "java",
                                                 "retry_backoff_ms": RETRY_BACKOFF_MS}),
            python("txn_aiokafka", "aiokafka.AIOKafkaProducer"),
            python("txn_new_layer", new_layer)]


def command(cfg: dict) -> list[str]:
    if cfg["client"] == "java":
        return ["java", "-Xmx512m", "-XX:+UseG1GC", "-cp", str(kstreams_peer.JAR),
                "txingest.kstreams.TxnLoop", orjson.dumps(cfg).decode()]
    return [*python_module("bench.txn_loop"), orjson.dumps(cfg).decode()]


async def run(ctx: Ctx, variant: Variant, round_no: int) -> dict:
    """One run of one client: its figures, and whether it passed the exact gate."""
    topics = await create_topics(ctx.bootstrap, 1, name=f"txn-{variant.name[4:]}")
    transactions = ctx.spec.files
    cfg = {**variant.cfg, "bootstrap": ctx.bootstrap, "input": topics.input,
           "output": topics.output, "group": topics.group, "transactions": transactions,
           "transactional_id": f"{topics.group}-txn"}
    log = ctx.logs / f"txn-{variant.name}-{round_no}.log"
    log.unlink(missing_ok=True)
    result: dict = {"variant": variant.name, "round": round_no, "files": transactions,
                    "partitions": 1, "loadavg_start": list(os.getloadavg()), "log": str(log)}
    child = ChildProcess(command(cfg), {}, log).start()
    try:
        code = await child.wait(ctx.timeout)
    finally:
        await child.stop(timeout=30)
    result.update(exit_code=code, cpu_s=round(child.cpu_s, 2),
                  peak_rss_mb=round(child.peak_rss_mb, 1))
    committed_at = committed_times(log.read_text(errors="replace"))
    if committed_at is not None and len(committed_at) == transactions:
        result.update(figures(committed_at))
    result["gate"] = await gate(ctx.bootstrap, topics, transactions)
    result["ok"] = bool(result["gate"]["ok"] and code == 0 and "files_per_s" in result)
    await delete_topics(ctx.bootstrap, topics)
    return result


def committed_times(output: str) -> list[float] | None:
    """Each commit's time from the client's ``RESULT`` line; None without one."""
    for line in reversed(output.splitlines()):
        if line.startswith("RESULT "):
            return [float(t) for t in orjson.loads(line[7:])["committed_at_s"]]
    return None


def figures(committed_at: list[float]) -> dict:
    """Transactions per second in the steady window (the 10% to the 90% transaction)
    and the transactions' own durations (commit to commit), p50 and p99 in ms."""
    n = len(committed_at)
    low, high = int(STEADY[0] * n), max(int(STEADY[1] * n) - 1, int(STEADY[0] * n) + 1)
    if high >= n or committed_at[high] <= committed_at[low]:
        return {}
    rate = (high - low) / (committed_at[high] - committed_at[low])
    durations = [1000 * (b - a) for a, b in zip([0.0, *committed_at], committed_at,
                                                strict=False)]
    return {"files_per_s": rate, "msgs_per_s": RECORDS * rate,
            "self_timed_txn_per_s": n / committed_at[-1],
            "p50_ms": round(percentile(durations, 50), 2),
            "p99_ms": round(percentile(durations, 99), 2)}


async def gate(bootstrap: str, topics: Topics, transactions: int) -> dict:
    """Exact: the group committed offset ``transactions`` on the input, and the output
    holds every (transaction, record) once (read_committed)."""
    committed = await committed_offsets(bootstrap, topics)
    seen = [orjson.loads(r.value) for r in await read_all(bootstrap, topics.output)]
    pairs = {(v["txn"], v["record"]) for v in seen}
    want = {(t, r) for t in range(transactions) for r in range(RECORDS)}
    ok = committed == {0: transactions} and len(seen) == len(want) and pairs == want
    return {"ok": ok, "committed": committed, "expected": len(want), "read": len(seen),
            "distinct": len(pairs)}
