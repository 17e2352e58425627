"""``python -m chaos.run --tier ci|full``: exactly once under faults, end to end.

1. A private 3-node cluster (tools/local_cluster.py; or one broker), topics
   and a group with unique names, and the faulty file server.
2. A feeder publishes the input URLs round-robin over the input partitions, paced
   to last about as long as the planned faults and held back while the group's
   lag is over a bound, so there is always work in flight when a fault hits.
3. The copiers (``python -m app``, or the broken copier) start: one, then three,
   then two; meanwhile the seeded scheduler carries out its faults
   (chaos/faults.py), and carries on with kills, terms and bursts while the
   feeder still has input to publish.
4. After the last fault: wait (polling the group's lag) until the group has
   committed every input record: at most 120 s, or liveness fails. SIGTERM every
   copier (each must exit 0); wait for last stable offset == high watermark.
5. Read the output and dead-letter topics with read_committed and raw (markers
   included), the input topic, the group's offsets; chaos/checker.py judges.
6. Write a JSON report (results/chaos/<tier>-latest.json) and print, as the last
   line, ``chaos: PASS|FAIL inputs=... elapsed=...s``. Exit 1 on FAIL.

Every process started here (broker, copiers) is stopped by its pid at the end,
also on failure. ``--copier broken`` runs the same workload and faults against
chaos/broken.py and expects FAIL (exit 0 when the checker catches it).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from chaos import checker, logread, netfaults, netreport, runreport, txncheck
from chaos.faults import Copier, Scheduler
from chaos.faultyserver import FaultyServer
from chaos.harness import (
    COPIERS,
    LIVENESS_S,
    READ_TIMEOUT_S,
    RESULTS,
    SESSION_TIMEOUT_MS,
    STALL_S,
    TERM_TIMEOUT_S,
    TIERS,
    Progress,
    copier_env,
    create_topics,
    feed,
    report_progress,
    say,
    wait_stable,
    watch,
)
from chaos.toxiproxy import BINARY as TOXIPROXY
from chaos.toxiproxy import Toxiproxy
from chaos.workload import Expected, Workload, mark_repeats
from tools import local_cluster, local_kafka
from tools.proc import python_module

BrokerKill = Callable[[], Awaitable[str]]
BrokerRestart = Callable[[], Awaitable[None]]
GroupOffsets = tuple[dict[int, int], dict[int, int]]   # (group committed, input end)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tier = TIERS[args.tier]
        if args.brokers:
            self.tier = dataclasses.replace(self.tier, brokers=args.brokers)
        self.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
        self.run_id = f"{args.tier}-{self.seed}-{os.getpid()}"
        self.work = Path(tempfile.mkdtemp(prefix=f"txingest-chaos-{args.tier}-"))
        self.data = self.work / "kafka"
        self.logs = self.work / "logs"
        self.logs.mkdir()
        self.started = time.monotonic()
        self.wall_started = time.time()
        self.phases: dict[str, float] = {}
        self.phase_started = self.started
        self.failures: list[str] = []     # run-level: exit codes, plan not met, harness
        self.verdict: checker.Verdict | None = None
        self.transactions: txncheck.TxnVerdict | None = None   # Kafka's own tool's view
        self.scheduler: Scheduler | None = None
        self.server: FaultyServer | None = None
        self.names: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.final_exit_codes: dict[str, int | None] = {}
        self.broker_started = False
        self.progress: Progress | None = None
        self.toxi: Toxiproxy | None = None          # the network tier's proxies
        self.net: netfaults.NetFaults | None = None
        self.listeners = (netfaults.listeners(COPIERS, self.tier.brokers, local_kafka.free_port)
                          if self.tier.network else [])

    async def start_kafka(self) -> tuple[str, BrokerKill, BrokerRestart]:
        """The private broker (or cluster) and the fault scheduler's kill and restart:
        in a cluster each restart takes the next node in turn, so every node is bounced."""
        size = self.tier.brokers
        if self.tier.network:
            await self.start_proxies()
        if size == 1:
            nodes = [await asyncio.to_thread(local_kafka.start, None, self.data)]
        else:
            nodes = await asyncio.to_thread(local_cluster.start, size, self.data, 180,
                                            self.listeners)
        self.broker_started = True
        victims = itertools.cycle(node.data for node in nodes)
        victim = nodes[0].data

        async def broker_kill() -> str:
            nonlocal victim
            victim = next(victims)
            await asyncio.to_thread(local_kafka.kill, victim)
            return "the broker" if size == 1 else f"broker {victim.name} of {size}"

        async def broker_restart() -> None:
            await asyncio.to_thread(local_kafka.restart, victim, 180)
        return local_cluster.bootstrap(nodes), broker_kill, broker_restart

    async def start_proxies(self) -> None:
        """Toxiproxy and one proxy per copier and broker (chaos/netfaults.py), before
        the cluster: the proxies' ports are advertised by the brokers."""
        if len(self.listeners[0].ports) < 2:
            raise SystemExit("the network tier needs a cluster (--brokers 3)")
        self.toxi = await Toxiproxy(self.args.toxiproxy, self.logs / "toxiproxy.log").start()
        self.net = netfaults.NetFaults(self.toxi, self.listeners, self.tier.input_partitions)
        await self.net.create_proxies()

    def copier_env(self, i: int) -> dict[str, str]:
        if self.net is None:
            return self.env
        return {**self.env, "KAFKA_BOOTSTRAP_SERVERS": self.net.bootstrap_for(i)}

    def network_report(self) -> dict:
        if self.net is None or self.scheduler is None:
            return {}
        logs = [c.log_text().splitlines() for c in self.scheduler.copiers]
        return {"faults": self.net.done,
                "events_by_fault_kind": netreport.report(self.scheduler.fault_starts,
                                                         self.wall_started, logs)}

    def mark(self, phase: str) -> None:
        """The time since the last mark (or the run's start) is ``phase``'s."""
        now = time.monotonic()
        self.phases[phase] = round(now - self.phase_started, 1)
        self.phase_started = now

    async def main(self) -> None:
        args = self.args
        say(f"chaos: tier {args.tier}, seed {self.seed}, copier {args.copier}"
            f"{' (' + args.broken_mode + ')' if args.copier == 'broken' else ''}, "
            f"work dir {self.work}")
        self.phase_started = time.monotonic()
        bootstrap, broker_kill, broker_restart = await self.connect()
        self.mark("setup_s")
        workload = Workload(self.seed)
        await self.plan_faults(bootstrap, workload, broker_kill, broker_restart)
        last_fault, done_at, committed_offsets = await self.faults_and_recovery(bootstrap,
                                                                                workload)
        if not await wait_stable(bootstrap, [self.names["output"], self.names["dlq"]], 60):
            say("chaos: last stable offset still below the high watermark after 60s")
        self.mark("shutdown_s")
        await self.check(bootstrap, workload, committed_offsets, last_fault, done_at)
        self.mark("check_s")
        assert self.scheduler is not None
        self.scheduler.count_fenced_zombies()
        self.failures += runreport.plan_failures(self.scheduler, self.tier.plan,
                                                 self.broker_started, self.final_exit_codes)

    async def connect(self) -> tuple[str, BrokerKill | None, BrokerRestart | None]:
        """The broker (a private one unless --bootstrap) and the run's topics."""
        if self.args.bootstrap and self.tier.network:
            raise SystemExit("the network tier starts its own cluster: no --bootstrap")
        broker_kill: BrokerKill | None = None
        broker_restart: BrokerRestart | None = None
        if self.args.bootstrap:
            bootstrap = self.args.bootstrap
        else:
            bootstrap, broker_kill, broker_restart = await self.start_kafka()
        self.names = await create_topics(bootstrap, self.tier, self.run_id)
        if self.net is not None:
            self.net.attach(bootstrap, self.copier_transactional_id)
        return bootstrap, broker_kill, broker_restart

    def copier_transactional_id(self, n: int) -> str:
        """The transactional id of producer ``n`` of the copiers: copier n % COPIERS's
        slot n // COPIERS (each copier's producers are numbered from 0)."""
        return app_settings(self.names, f"{self.run_id}-{n % COPIERS}").transactional_id(
            n // COPIERS)

    async def plan_faults(self, bootstrap: str, workload: Workload,
                          broker_kill: BrokerKill | None,
                          broker_restart: BrokerRestart | None) -> None:
        """The faulty file server, the copiers (none started yet) and the seeded scheduler."""
        args, tier = self.args, self.tier
        self.server = server = await FaultyServer(workload, stall_s=READ_TIMEOUT_S + 1.5).start()
        module = "chaos.broken" if args.copier == "broken" else "chaos.copier"
        self.env = copier_env(bootstrap, self.names, tier, args.broken_mode)
        copiers = [Copier(f"{self.run_id}-{i}", python_module(module),
                          {**self.copier_env(i), **tier.copier_settings(i)}, self.logs)
                   for i in range(COPIERS)]
        rng = random.Random(self.seed)
        self.scheduler = Scheduler(
            rng, tier.plan, copiers, tier.input_partitions, SESSION_TIMEOUT_MS / 1000,
            TERM_TIMEOUT_S, broker_kill, broker_restart, server.burst, say, self.started,
            net=self.net.handlers() if self.net else None)
        say(f"chaos: plan {' '.join(self.scheduler.events)}")

    async def faults_and_recovery(self, bootstrap: str, workload: Workload
                                  ) -> tuple[float, float | None, GroupOffsets | None]:
        """Feed the input while the faults run, wait for the group to commit it all, stop
        the copiers: (last fault, when all was committed or None, the group's offsets)."""
        assert self.server is not None
        tier = self.tier
        view = logread.GroupView(bootstrap, self.names["input"], self.names["group"],
                                 tier.input_partitions)
        self.progress = progress = Progress()
        stop = asyncio.Event()
        background = [asyncio.create_task(watch(view, progress, stop, self.started)),
                      asyncio.create_task(report_progress(progress, self.copiers(), tier,
                                                          stop, self.started))]
        feeder = asyncio.create_task(feed(bootstrap, self.names["input"], workload,
                                          self.server.base_url, tier, progress))
        try:
            last_fault = await self.run_faults(feeder)
            done_at = await self.wait_committed(last_fault)
            self.mark("recovery_s")
            if self.toxi is not None:
                await self.toxi.reset()   # each fault undoes itself; this is belt and braces
            await self.stop_copiers()
            committed_offsets = await view.offsets()
        finally:
            stop.set()
            feeder.cancel()
            for task in background:
                await asyncio.gather(task, return_exceptions=True)
            await asyncio.gather(feeder, return_exceptions=True)
            await view.close()
            if self.toxi is not None:
                await self.toxi.close_api()
        return last_fault, done_at, committed_offsets

    def copiers(self) -> list[Copier]:
        assert self.scheduler is not None
        return self.scheduler.copiers

    async def run_faults(self, feeder: asyncio.Task[None]) -> float:
        """Every planned fault, and more while the feeder publishes; when the last ended."""
        assert self.scheduler is not None and self.progress is not None
        scheduler, progress = self.scheduler, self.progress
        scheduler.first()
        await scheduler.run(keep_going=lambda: not feeder.done() and not progress.stalled)
        if progress.stalled:
            self.failures.append(f"stalled: nothing committed for {STALL_S:.0f}s "
                                 f"(fed {progress.fed}, lag {progress.lag})")
            feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        last_fault = scheduler.last_fault_at or time.monotonic()
        self.mark("faults_s")
        say(f"chaos: faults over; waiting for the group to commit everything "
            f"(lag {progress.lag})")
        return last_fault

    async def wait_committed(self, last_fault: float) -> float | None:
        """When the group had committed every input record; None if not in time."""
        assert self.progress is not None
        progress = self.progress
        deadline = last_fault + LIVENESS_S + 120  # past the limit: to report how late
        while time.monotonic() < deadline and not progress.stalled:
            if progress.lag == 0 and progress.feeding_done:
                return time.monotonic()
            await asyncio.sleep(0.25)
        return None

    async def stop_copiers(self) -> None:
        """SIGTERM every copier of the group, once it consumes; each must exit 0."""
        assert self.scheduler is not None
        self.scheduler.check_running()
        for c in self.scheduler.active:
            if c.paused:
                c.resume()
            await c.wait_consuming(60)  # not while it is still importing its modules
            self.final_exit_codes[c.name] = await c.stop(TERM_TIMEOUT_S)

    async def check(self, bootstrap: str, workload: Workload,
                    committed_offsets: GroupOffsets | None, last_fault: float,
                    done_at: float | None) -> None:
        """Read the topics and the group's offsets back; the checker's verdict."""
        inputs = self.expected(await logread.read_values(bootstrap, self.names["input"]),
                               workload)
        outputs = await logread.read_committed(bootstrap, self.names["output"])
        dead = await logread.read_committed(bootstrap, self.names["dlq"])
        out_log, out_ends = await logread.read_log(bootstrap, self.names["output"])
        dlq_log, dlq_ends = await logread.read_log(bootstrap, self.names["dlq"])
        while committed_offsets is None:  # the broker is up: this answers
            committed_offsets = await logread.GroupView(
                bootstrap, self.names["input"], self.names["group"],
                self.tier.input_partitions).offsets()
        group, ends = committed_offsets
        self.verdict = checker.check(
            inputs=inputs, input_topic=self.names["input"], outputs=outputs,
            dead_letters=dead, output_log=out_log, dlq_log=dlq_log, group_offsets=group,
            input_ends=ends, output_ends=out_ends, dlq_ends=dlq_ends,
            last_fault_at=last_fault, done_at=done_at, liveness_s=LIVENESS_S,
            require_aborts=self.tier.abort_rate > 0)
        self.verdict.counts["repeats"] = sum(1 for w in inputs.values() if w.items == ())
        spooled = sum(len(c.events("spooled")) for c in self.copiers())
        self.verdict.counts["spooled"] = spooled
        if self.tier.spooled and not spooled:
            self.verdict.failures.append("spooled=0: no file went through the spool")
        await self.check_transactions(bootstrap)

    async def check_transactions(self, bootstrap: str) -> None:
        """Kafka's own transaction tool: nothing of the run open or hanging, and every
        transactional id of the service's form (chaos/txncheck.py)."""
        assert self.verdict is not None
        pattern = (txncheck.service_transactional_ids(
            self.names["group"], self.names["input"], [c.name for c in self.copiers()])
            if self.args.copier == "service" else None)
        scope = txncheck.Scope(self.names["group"], frozenset(
            self.names[k] for k in ("input", "output", "dlq", "dedup")))
        self.transactions = await txncheck.check(bootstrap, pattern, scope)
        self.verdict.failures += self.transactions.failures
        self.verdict.counts.update(self.transactions.counts())
        say(f"chaos: kafka-transactions: {len(self.transactions.ids)} transactional ids of "
            f"the run, {len(self.transactions.open)} open, {len(self.transactions.hanging)} "
            "hanging")

    def expected(self, inputs_raw: list[tuple[int, int, bytes | None]], workload: Workload
                 ) -> dict[tuple[int, int], Expected]:
        """What each input record must produce, from the workload that made it."""
        inputs = {}
        for p, o, value in inputs_raw:
            want = workload.expected(value)
            if want is None:
                self.failures.append(f"input {p}@{o} is no file of this workload: {value!r}")
                continue
            inputs[(p, o)] = want
        if self.tier.dedup != "off" and self.args.copier == "service":
            inputs = mark_repeats(inputs)
        missing = set(range(self.tier.inputs)) - {w.n for w in inputs.values()}
        if missing:
            self.failures.append(f"the feeder did not publish {len(missing)} inputs")
        return inputs

    def cleanup(self, keep: bool) -> None:
        if self.scheduler is not None:
            self.scheduler.stop_all()
        if self.toxi is not None:
            self.toxi.stop()
        if self.broker_started and self.tier.brokers > 1:
            local_cluster.stop(self.data, remove=not keep)
        elif self.broker_started:
            local_kafka.stop(self.data, remove=not keep)
        if not keep:
            shutil.rmtree(self.work, ignore_errors=True)

    def outcome(self) -> tuple[bool, str, dict]:
        """PASS or FAIL, the last line, and the JSON report."""
        v = self.verdict
        failures = [*(v.failures if v else []), *self.failures]
        passed = v is not None and not failures
        elapsed = time.monotonic() - self.started
        faults = self.scheduler.counts if self.scheduler else None
        line = runreport.last_line(passed, dict(v.counts) if v else {}, faults,
                                   self.tier.network, elapsed)
        return passed, line, runreport.report(self, passed, failures, line, elapsed)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos.run", description=__doc__.split("\n")[0])
    parser.add_argument("--tier", choices=sorted(TIERS), default="ci")
    parser.add_argument("--seed", type=int, help="fault and workload seed (default: random)")
    parser.add_argument("--brokers", type=int, choices=(1, 3),
                        help="a single broker or a 3-node cluster (default: the tier's)")
    parser.add_argument("--copier", choices=("service", "broken"), default="service")
    parser.add_argument("--broken-mode", choices=("autocommit", "pod-txn-id"),
                        default="autocommit")
    parser.add_argument("--expect", choices=("pass", "fail"),
                        help="default: pass for the service, fail for the broken copier")
    parser.add_argument("--bootstrap", help="use this broker instead of a private one "
                        "(then no broker faults)")
    parser.add_argument("--report", type=Path, help="where the JSON report goes "
                        "(default: results/chaos/<tier>-latest.json)")
    parser.add_argument("--toxiproxy", type=Path, default=TOXIPROXY,
                        help="toxiproxy's server binary, for the net tier (make toxiproxy)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, broker "
                        "data) even on PASS")
    args = parser.parse_args(argv)
    if args.expect is None:
        args.expect = "fail" if args.copier == "broken" else "pass"
    if args.report is None:
        name = args.tier if args.copier == "service" else f"broken-{args.tier}"
        args.report = RESULTS / f"{name}-latest.json"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the broker restarts on purpose
    run = Run(args)
    terminated: list[bool] = []

    async def guarded() -> None:
        # SIGTERM (like Ctrl-C) ends the run through the same cleanup: every process
        # started here is stopped by its pid, and the report says why it ended.
        task = asyncio.current_task()
        assert task is not None

        def on_term() -> None:
            terminated.append(True)
            task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_term)
        await run.main()

    try:
        asyncio.run(guarded())
    except BaseException as exc:  # noqa: BLE001 - reported as a FAIL, with the cause
        if terminated:
            run.failures.append("stopped by SIGTERM before the end")
        else:
            traceback.print_exc()
            run.failures.append(f"harness error: {exc!r}")
    passed, line, report = run.outcome()
    # Keep the logs and broker data of an unexpected FAIL (or on --keep) for a post-mortem.
    keep = args.keep or (not passed and args.expect == "pass")
    if keep:
        report["work_dir"] = str(run.work)
    run.cleanup(keep)
    runreport.write(args.report, report)
    runreport.print_findings(report)
    say(f"chaos: report {args.report}")
    return runreport.exit_code(args.expect, passed, line, report)


def app_settings(names: dict[str, str], pod_name: str | None = None):
    """The copiers' settings as far as the harness needs them (transactional ids)."""
    from app.config import Settings

    return Settings(input_topic=names["input"], group_id=names["group"],
                    transactional_id_prefix=names["group"], pod_name=pod_name)


if __name__ == "__main__":
    sys.exit(main())
