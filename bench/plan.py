"""Which variants each scenario runs, and with which files: the benchmark's plan
(bench/run.py carries it out). ``--add``, ``--variants`` and ``--profile`` adjust it."""

from __future__ import annotations

import argparse
import dataclasses

from bench import txn_scenario
from bench.variant import Variant
from bench.workload import Spec

SERVICE = Variant("service", "service")
UPPER = Variant("upper_bound", "service", env={"PROCESSING_GUARANTEE": "at_least_once"})
R1 = Variant("r1", "baseline", cfg={"variant": "r1"})
PEER = Variant("peer", "peer")
DEDUP = Variant("service_dedup", "service", env={"DEDUP": "url"})
# Not in --all (add with --add NAME@bench.probe:...): the service instrumented by
# bench/probe.py, for where a transaction's time goes and changes to try first.


def r2(backoff_ms: int = 20, name: str = "r2", offsets_first: bool = False,
       committer: bool = False) -> Variant:
    return Variant(name, "baseline", cfg={"variant": "r2", "retry_backoff_ms": backoff_ms,
                                          "offsets_first": offsets_first,
                                          "committer": committer})


# R2 through the service's own committer (app/kafka/committer.py: closed batches, the offsets
# sent while the records are in flight): the ceiling of today's commit path.
R2_COMMITTER = r2(name="r2_committer", committer=True)


def sweep() -> list[Variant]:
    """R2 by retry_backoff_ms, in the service's order (sends first) and the other one."""
    return ([r2(ms, f"r2_backoff_{ms}") for ms in (100, 20, 5, 1)]
            + [r2(ms, f"r2_offsets_first_backoff_{ms}", offsets_first=True)
               for ms in (100, 20, 1)])


def group_commit(n: int) -> Variant:
    """The service with up to ``n`` input records per transaction (prefetch deep enough)."""
    return Variant(f"service_n{n}", "service", env={"TRANSACTION_MAX_RECORDS": str(n),
                                                   "PREFETCH_PER_PARTITION": str(max(8, n))})


def kstreams_peer(threads: int) -> Variant:
    """Kafka Streams (bench/kstreams_peer.py) with ``threads`` stream threads."""
    return Variant("kstreams", "kstreams", cfg={"threads": threads})


def naive(limit: int) -> Variant:
    return Variant("naive", "baseline", cfg={"variant": "naive"}, limit=limit)


def extra(text: str) -> Variant:
    """``NAME[@MODULE][:KEY=VALUE,...]``: a service variant with other settings."""
    head, _, settings = text.partition(":")
    name, _, module = head.partition("@")
    env = dict(kv.split("=", 1) for kv in settings.split(",") if kv)
    return Variant(name, "service", env=env, module=module or "app")


def plan(args: argparse.Namespace) -> dict[str, tuple[list[Spec], list[Variant]]]:
    """Scenario name -> (its specs, run in turn each round; its variants)."""
    chosen = _plan(args)
    if args.all and "S1" in chosen:  # issue 15: group commit and DEDUP next to the default
        chosen["S1"][1][1:1] = [group_commit(8), group_commit(32), group_commit(128), DEDUP]
    for _specs, variants in chosen.values():
        variants += [extra(text) for text in args.add]
        if args.variants:
            keep = args.variants.split(",")
            variants[:] = [v for v in variants if v.name in keep]
        sampled = args.profile.split(",")
        variants[:] = [dataclasses.replace(v, profile=v.name in sampled) for v in variants]
    return chosen


def _plan(args: argparse.Namespace) -> dict[str, tuple[list[Spec], list[Variant]]]:
    s1 = Spec(files=args.s1_files, partitions=8, latency_ms=50)
    if args.quick:
        return {"S1": ([s1], [SERVICE, naive(args.naive_files), r2()])}
    s3 = [Spec(files=args.s3_files, partitions=p, latency_ms=10) for p in (8, 32, 128)]
    return {  # the longest last: results are written after each scenario
        "S1": ([s1], [SERVICE, UPPER, naive(args.naive_files), r2(), R2_COMMITTER,
                      kstreams_peer(threads=s1.partitions)]),
        # One producer's sequential per-record transactions: Java, aiokafka, the new layer.
        "TXN": ([Spec(files=args.txn_transactions, partitions=1, latency_ms=0)],
                txn_scenario.variants(args.txn_producer)),
        "S3": (s3, [SERVICE, r2()]),
        "S4": ([Spec(files=0, partitions=8, latency_ms=args.s4_delay_ms)],
               [SERVICE, group_commit(32)]),  # load_spec sets its rate and files
        "R2": ([Spec(files=args.sweep_files, partitions=8, latency_ms=0)], sweep()),
        "S2": ([Spec(files=args.s2_files, partitions=4, latency_ms=0, large=True)],
               [SERVICE, UPPER, R1, PEER, kstreams_peer(threads=1)]),
    }
