"""Copier processes and the seeded fault scheduler.

A :class:`Copier` is one ``python -m app`` (or the broken copier) with its own
``POD_NAME``, started, signalled and stopped by its pid. The :class:`Scheduler`
draws a plan from a seed (which faults, in which order, the gaps between them,
restart delays, who is hit) and carries it out against the running group:

- ``kill``: kill -9 a copier, restart it (same POD_NAME) after a short or a
  long (past the session timeout) delay;
- ``kill_all``: kill -9 every copier at once, restart them;
- ``term``: SIGTERM (a clean bounce): it must exit 0; restart it;
- ``zombie``: SIGSTOP a copier until the others hold all its partitions (past the
  session timeout), then SIGCONT: its producers must find themselves fenced;
- ``scale_up`` / ``scale_down``: the group goes 1 -> 3 -> 2 copiers;
- ``broker``: kill -9 the broker, restart it on the same data;
- ``burst``: the file server answers 503 to everything for a few seconds;
- ``net_*``: network faults between the copiers and the brokers, carried out by
  the handlers the scheduler is given (chaos/netfaults.py).

Every fault is counted. The gaps between faults are the only sleeps that are not
waits on a condition: they are part of the workload.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tools.proc import ChildProcess


class Copier(ChildProcess):
    """One copier process as pod ``name``, in its own session, stopped by its pid; its
    log is kept across restarts, each start marked in it."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        super().__init__(argv, {**env, "POD_NAME": name}, log_dir / f"{name}.log",
                         new_session=True)

    def start(self) -> Copier:
        self.note(f"--- chaos: start #{self.starts + 1} of {self.name}")
        super().start()
        return self


@dataclass
class Plan:
    """The faults a tier must include, at least."""

    kills: int
    terms: int
    zombies: int
    broker_restarts: int
    bursts: int
    kill_all: int = 0
    kill_rounds: int = 0           # every copier killed at least this many times
    gap: tuple[float, float] = (2.0, 6.0)
    restart: tuple[float, float] = (0.1, 2.0)   # seconds before a restart, mostly
    long_restart: float = 0.25     # share of restarts that wait past the session timeout
    # After the planned faults, while the feeder still publishes: these, by weight.
    extra: tuple[tuple[str, float], ...] = (("kill", 6), ("term", 2), ("burst", 2))
    net: tuple[tuple[str, int], ...] = ()   # network faults (chaos/netfaults.py): kind, count


@dataclass
class Counts:
    kills: int = 0
    terms: int = 0
    zombies: int = 0
    broker_restarts: int = 0
    bursts: int = 0
    kill_all: int = 0
    scale_up: int = 0
    scale_down: int = 0
    long_restarts: int = 0
    zombie_takeover_timeouts: int = 0
    zombies_fenced: int = 0        # zombies whose producers, after SIGCONT, were fenced
    zombies_revoked: int = 0       # zombies whose consumer, after SIGCONT, lost partitions
    term_exit_codes: list[int | None] = field(default_factory=list)
    unexpected_exits: list[tuple[str, int | None]] = field(default_factory=list)
    kills_by_copier: collections.Counter[str] = field(default_factory=collections.Counter)
    net: collections.Counter[str] = field(default_factory=collections.Counter)
    timeline: list[tuple[float, str, str]] = field(default_factory=list)


# Faults that need another copier running to take the victim's partitions over.
NEEDS_ANOTHER = ("zombie", "net_cutoff")
# A network fault's handler: carries it out (using the scheduler's rng, copiers and
# notes) and says whether it did (False: skipped).
NetHandler = Callable[["Scheduler"], Awaitable[bool]]


class Scheduler:
    """Carries out a seeded plan of faults against the copiers, the broker and the
    file server (and the network, given ``net`` handlers)."""

    def __init__(self, rng: random.Random, plan: Plan, copiers: list[Copier],
                 partitions: int, session_timeout_s: float, term_timeout_s: float,
                 broker_kill: Callable[[], Awaitable[str]] | None,
                 broker_restart: Callable[[], Awaitable[None]] | None,
                 burst: Callable[[float], None], log: Callable[[str], None],
                 started: float | None = None,
                 net: Mapping[str, NetHandler] | None = None) -> None:
        self.rng = rng
        self.plan = plan
        self.copiers = copiers          # copiers[0] runs from the start; the rest join later
        self.partitions = partitions
        self.session_timeout_s = session_timeout_s
        self.term_timeout_s = term_timeout_s
        self.broker_kill = broker_kill
        self.broker_restart = broker_restart
        self.burst = burst
        self.log = log
        self.net = dict(net or {})
        self.active = [copiers[0]]      # the copiers that should be running
        self.counts = Counts()
        self.started = started if started is not None else time.monotonic()
        self.last_fault_at: float | None = None
        self.fault_starts: list[tuple[float, str]] = []   # (seconds since started, kind)
        self.events = self._draw()
        self._resumed: list[tuple[Copier, int]] = []   # zombies, and their log at SIGCONT

    def _draw(self) -> list[str]:
        p = self.plan
        events = (["kill"] * p.kills + ["term"] * p.terms + ["zombie"] * p.zombies
                  + ["broker"] * (p.broker_restarts if self.broker_kill else 0)
                  + ["burst"] * p.bursts + ["kill_all"] * p.kill_all
                  + [kind for kind, n in p.net if kind in self.net for _ in range(n)])
        self.rng.shuffle(events)
        # The first fault hits the single copier, so not a zombie (nobody would take
        # over); then 1 -> 3 copiers; 3 -> 2 late.
        if events and events[0] in NEEDS_ANOTHER:
            other = next((i for i, e in enumerate(events) if e not in NEEDS_ANOTHER), None)
            if other is not None:
                events[0], events[other] = events[other], events[0]
        events.insert(min(1, len(events)), "scale_up")
        events.insert(max(2, len(events) * 4 // 5), "scale_down")
        return events

    def first(self) -> None:
        self.active[0].start()

    async def run(self, keep_going: Callable[[], bool]) -> None:
        """Every planned fault, then more drawn from ``plan.extra`` while ``keep_going()``."""
        queue = list(self.events)
        while queue or keep_going():
            kinds, weights = zip(*self.plan.extra, strict=True)
            kind = queue.pop(0) if queue else self.rng.choices(kinds, weights)[0]
            if ((kind == "broker" and self.broker_kill is None)
                    or (kind.startswith("net_") and kind not in self.net)):
                kind = "kill"
            await asyncio.sleep(self.rng.uniform(*self.plan.gap))
            self.check_running()
            self.fault_starts.append((round(time.monotonic() - self.started, 1), kind))
            await self._do(kind)
            self.last_fault_at = time.monotonic()

    def check_running(self) -> None:
        """Between faults every copier of the group is running: one that exited on its
        own is recorded (the run fails) and started again so the run goes on."""
        for x in self.active:
            if not x.alive:
                code = x.proc.returncode if x.proc is not None else None
                self.counts.unexpected_exits.append((x.name, code))
                self._note("exited", f"{x.name} exited on its own with {code}; restarting it")
                x.start()

    def _note(self, kind: str, detail: str) -> None:
        at = time.monotonic() - self.started
        self.counts.timeline.append((round(at, 1), kind, detail))
        self.log(f"[{at:6.1f}s] {kind:<10} {detail}")

    def _restart_delay(self) -> float:
        if self.rng.random() < self.plan.long_restart:
            self.counts.long_restarts += 1
            return self.session_timeout_s + self.rng.uniform(0.5, 3.0)
        return self.rng.uniform(*self.plan.restart)

    def _pick(self) -> Copier | None:
        """The next victim: fewest kills first when every copier needs kill rounds."""
        live = [c for c in self.active if c.alive and not c.paused]
        if not live:
            return None
        if self.plan.kill_rounds:
            fewest = min(self.counts.kills_by_copier[c.name] for c in live)
            live = [c for c in live if self.counts.kills_by_copier[c.name] == fewest]
        return self.rng.choice(live)

    async def _do(self, kind: str) -> None:
        if kind in self.net:
            if await self.net[kind](self):
                self.counts.net[kind] += 1
            return
        faults = {"kill": self._kill, "kill_all": self._kill_all, "term": self._term,
                  "zombie": self._zombie, "scale_up": self._scale_up,
                  "scale_down": self._scale_down, "broker": self._broker, "burst": self._burst}
        if kind not in faults:
            raise ValueError(kind)
        await faults[kind]()

    def _count_kill(self, victim: Copier) -> None:
        victim.kill()
        self.counts.kills += 1
        self.counts.kills_by_copier[victim.name] += 1

    async def _kill(self) -> None:
        victim = self._pick()
        if victim is None:
            self._note("kill", "skipped: no copier running")
            return
        delay = self._restart_delay()
        self._count_kill(victim)
        self._note("kill", f"{victim.name}, restart in {delay:.1f}s")
        await asyncio.sleep(delay)
        victim.start()

    async def _kill_all(self) -> None:
        delay = self._restart_delay()
        for victim in self.active:
            self._count_kill(victim)
        self.counts.kill_all += 1
        self._note("kill_all", f"{len(self.active)} copiers, restart in {delay:.1f}s")
        await asyncio.sleep(delay)
        for victim in self.active:
            victim.start()

    async def _term(self) -> None:
        victim = self._pick()
        if victim is None:
            self._note("term", "skipped: no copier running")
            return
        # A clean bounce of a running copier: not one still importing its modules.
        await victim.wait_consuming(60)
        self._note("term", victim.name)
        code = await victim.stop(self.term_timeout_s)
        self.counts.terms += 1
        self.counts.term_exit_codes.append(code)
        if code != 0:
            self.log(f"  {victim.name} exited with {code} after SIGTERM")
        await asyncio.sleep(self._restart_delay())
        victim.start()

    async def _scale_up(self) -> None:
        joining = [x for x in self.copiers if x not in self.active]
        for x in joining:
            self.active.append(x)
            x.start()
        self.counts.scale_up += 1
        self._note("scale_up", f"{len(self.active)} copiers")

    async def _scale_down(self) -> None:
        leaving = self.active.pop()
        await leaving.wait_consuming(60)
        self._note("scale_down", f"{leaving.name} stops for good (SIGTERM)")
        code = await leaving.stop(self.term_timeout_s)
        self.counts.terms += 1
        self.counts.scale_down += 1
        self.counts.term_exit_codes.append(code)

    async def _broker(self) -> None:
        assert self.broker_kill is not None and self.broker_restart is not None
        which = await self.broker_kill()
        down = self.rng.uniform(0.5, 4.0)
        self._note("broker", f"kill -9 {which}, restart in {down:.1f}s")
        await asyncio.sleep(down)
        started = time.monotonic()
        await self.broker_restart()
        self.counts.broker_restarts += 1
        self._note("broker", f"back after {time.monotonic() - started:.1f}s of recovery")

    async def _burst(self) -> None:
        seconds = self.rng.uniform(1.0, 3.0)
        self.burst(seconds)
        self.counts.bursts += 1
        self._note("burst", f"503 for {seconds:.1f}s")

    async def _zombie(self) -> None:
        live = [x for x in self.active if x.alive and not x.paused]
        if len(live) < 2:
            self._note("zombie", "skipped: no other copier to take over")
            return
        victim = self.rng.choice(live)
        others = [x for x in live if x is not victim]
        await victim.wait_consuming(60)
        marks = {x.name: x.log_size() for x in others}
        victim.pause()
        stopped_at = time.monotonic()
        self._note("zombie", f"SIGSTOP {victim.name}")
        await self.wait_taken_over(others, marks, stopped_at)
        await asyncio.sleep(self.rng.uniform(0.2, 2.0))
        self._resumed.append((victim, victim.log_size()))
        victim.resume()
        self.counts.zombies += 1
        self._note("zombie", f"SIGCONT {victim.name} after {time.monotonic() - stopped_at:.1f}s")

    async def wait_taken_over(self, others: list[Copier], marks: dict[str, int],
                              since: float) -> bool:
        """Until ``others`` hold every partition (assignments logged past ``marks``) and
        the session timeout has passed since ``since``; False (counted) after a minute more."""
        def taken_over() -> bool:
            held: set[int] = set()
            for x in others:
                got = x.assignment(marks[x.name])
                if got is None:
                    return False
                held |= got
            return held >= set(range(self.partitions))

        deadline = since + self.session_timeout_s + 60
        at_least = since + self.session_timeout_s + 1
        while not taken_over() or time.monotonic() < at_least:
            if time.monotonic() > deadline:
                self.counts.zombie_takeover_timeouts += 1
                return False
            await asyncio.sleep(0.25)
        return True

    def note(self, kind: str, detail: str) -> None:
        """A line of the timeline (for fault handlers outside this module)."""
        self._note(kind, detail)

    def count_fenced_zombies(self) -> None:
        """What the zombies met once resumed (information; the checker judges)."""
        for victim, mark in self._resumed:
            self.counts.zombies_fenced += bool(victim.events("fenced", start=mark))
            self.counts.zombies_revoked += bool(victim.events("revoked", start=mark))

    def stop_all(self) -> None:
        """Kill every copier still running, by pid (the end of a run, or a failure)."""
        for x in self.copiers:
            if x.paused and x.alive:
                x.resume()
            x.kill()
