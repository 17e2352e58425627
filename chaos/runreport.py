"""What a chaos run reports (chaos/run.py runs it): whether its plan of faults was
carried out, its last line, the JSON report, the findings printed under it, and the
exit code."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from chaos.faults import Counts, Plan, Scheduler
from chaos.harness import RECORD_LEVEL, say
from tools import local_kafka

if TYPE_CHECKING:
    from chaos.run import Run


def plan_failures(scheduler: Scheduler, plan: Plan, broker_started: bool,
                  final_exit_codes: Mapping[str, int | None]) -> list[str]:
    """What the run did not carry out as planned, or copiers that did not exit 0."""
    c, p = scheduler.counts, plan
    failures = []
    broker_needed = p.broker_restarts if broker_started else 0
    for what, got, need in (("kills", c.kills, p.kills), ("terms", c.terms, p.terms),
                            ("zombies", c.zombies, p.zombies),
                            ("broker_restarts", c.broker_restarts, broker_needed)):
        if got < need:
            failures.append(f"plan not met: {what}={got} < {need}")
    if p.kill_rounds:
        for copier in scheduler.copiers:
            if c.kills_by_copier[copier.name] < p.kill_rounds:
                failures.append(f"plan not met: {copier.name} killed "
                                f"{c.kills_by_copier[copier.name]} times")
    bad_terms = [code for code in c.term_exit_codes if code != 0]
    if bad_terms:
        failures.append(f"SIGTERM did not exit 0: exit codes {bad_terms}")
    bad_final = {k: v for k, v in final_exit_codes.items() if v != 0}
    if bad_final:
        failures.append(f"final SIGTERM did not exit 0: {bad_final}")
    if c.unexpected_exits:
        failures.append(f"copiers exited on their own: {c.unexpected_exits}")
    for kind, need in p.net:
        if c.net[kind] < need:
            failures.append(f"plan not met: {kind}={c.net[kind]} < {need}")
    if c.zombie_takeover_timeouts:
        failures.append(f"{c.zombie_takeover_timeouts} zombie(s) resumed before the "
                        "others took their partitions over")
    return failures


def last_line(passed: bool, counts: dict, c: Counts | None, network: bool,
              elapsed: float) -> str:
    """``chaos: PASS|FAIL inputs=... elapsed=...s``: the verdict and what was done."""
    g = counts.get
    return (f"chaos: {'PASS' if passed else 'FAIL'} inputs={g('inputs', 0)} "
            f"outputs={g('outputs', 0)} duplicates={g('duplicates', 0)} lost={g('lost', 0)} "
            f"aborted_visible={g('aborted_visible', 0)} "
            f"order_violations={g('order_violations', 0)} "
            f"aborted_attempts={g('aborted_attempts', 0)} spooled={g('spooled', 0)} "
            f"kills={c.kills if c else 0} "
            f"terms={c.terms if c else 0} zombies={c.zombies if c else 0} "
            f"broker_restarts={c.broker_restarts if c else 0} "
            + (f"net_faults={sum(c.net.values()) if c else 0} " if network else "")
            + f"elapsed={elapsed:.0f}s")


def report(run: Run, passed: bool, failures: list[str], line: str, elapsed: float) -> dict:
    """The JSON report: the verdict, what the checker counted, the faults carried out,
    and what the run was (tier, seed, settings, machine)."""
    v = run.verdict
    c = run.scheduler.counts if run.scheduler else None
    return {
        "suite": "chaos",
        "tier": run.args.tier,
        "copier": run.args.copier,
        "broken_mode": run.args.broken_mode if run.args.copier == "broken" else None,
        "expect": run.args.expect,
        "seed": run.seed,
        "verdict": "PASS" if passed else "FAIL",
        "started_at": datetime.datetime.fromtimestamp(run.wall_started, datetime.UTC)
                                       .isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 1),
        "phases_s": run.phases,
        "recovery_after_last_fault_s": (round(v.recovery_s, 1)
                                        if v and v.recovery_s is not None else None),
        "counts": dict(v.counts) if v else {},
        "faults": ({**{k: val for k, val in dataclasses.asdict(c).items()
                       if k not in ("timeline", "kills_by_copier", "net")},
                    "kills_by_copier": dict(c.kills_by_copier), "net": dict(c.net),
                    "final_exit_codes": run.final_exit_codes} if c else {}),
        "http": dict(run.server.counts) if run.server else {},
        "committed_offset_regressions": [
            {"at_s": at, "input_partition": p, "from": a, "to": b}
            for at, p, a, b in (run.progress.regressions if run.progress else [])],
        "failures": failures,
        "examples": v.examples if v else {},
        "transactions": run.transactions.report() if run.transactions else {},
        "tier_config": {**dataclasses.asdict(run.tier)},
        "settings": {k: val for k, val in run.env.items()
                     if k not in ("KAFKA_BOOTSTRAP_SERVERS",)},
        "network": run.network_report(),
        "timeline": c.timeline if c else [],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kafka": local_kafka.kafka_version(), "platform": platform.platform()},
        "last_line": line,
    }


def write(path: Path, report: dict) -> None:
    """The JSON report, replaced whole (never half written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(path)


def print_findings(report: dict) -> None:
    """The failures, a few examples, and notes on what the run met."""
    for failure in report["failures"]:
        say(f"  FAIL {failure}")
    for kind, examples in list(report["examples"].items())[:12]:
        say(f"  e.g. {kind}: {examples[0]}")
    if report["committed_offset_regressions"]:
        say(f"  note: the broker's committed offsets for the group went backwards "
            f"{len(report['committed_offset_regressions'])} times (committed_offset_regressions "
            "in the report): work redone after that is the broker's loss, not the copiers'")
    for kind, counts in report["network"].get("events_by_fault_kind", {}).items():
        shown = ("faults", "aborted", "task_failed", "replaced_unknown_commit", "fenced",
                 "error_lines")
        say(f"  {kind}: " + " ".join(f"{k}={counts.get(k, 0)}" for k in shown))


def exit_code(expect: str, passed: bool, line: str, report: dict) -> int:
    """0 when the verdict is the expected one: PASS, or (broken copier) a record-level FAIL."""
    if expect == "fail":
        caught = [k for k in RECORD_LEVEL if report["counts"].get(k)]
        if passed or not caught:
            say("chaos: the broken copier was NOT caught by the checker")
            say(line)
            return 1
        say(f"chaos: expected FAIL, and the checker caught the broken copier ({', '.join(caught)})")
        say(line)
        return 0
    say(line)
    return 0 if passed else 1
