"""The fault scheduler and copier process control, against stand-in processes (no Kafka):
the plan follows from the seed, every planned fault is carried out and counted, and a
copier that dies on its own is noticed."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from chaos.faults import Copier, Plan, Scheduler

# A stand-in copier: exits 0 on SIGTERM, logs like the service, keeps its "partitions".
FAKE = r'''
import json, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print(json.dumps({"event": "consuming"}), flush=True)
while True:
    print(json.dumps({"event": "assigned", "partitions": [0, 1, 2, 3]}), flush=True)
    time.sleep(0.1)
'''
PLAN = Plan(kills=3, terms=2, zombies=1, broker_restarts=1, bursts=2, kill_all=1,
            gap=(0.01, 0.05), restart=(0.01, 0.05), long_restart=0.0)


def scheduler(tmp_path: Path, seed: int, program: str = FAKE) -> Scheduler:
    copiers = [Copier(f"c{i}", [sys.executable, "-c", program], {}, tmp_path) for i in range(3)]
    broker = {"kills": 0, "restarts": 0}

    async def kill() -> str:
        broker["kills"] += 1
        return "the broker"

    async def restart() -> None:
        broker["restarts"] += 1

    s = Scheduler(random.Random(seed), PLAN, copiers, partitions=4, session_timeout_s=0.3,
                  term_timeout_s=10, broker_kill=kill, broker_restart=restart,
                  burst=lambda seconds: None, log=lambda line: None)
    s.broker = broker  # type: ignore[attr-defined]
    return s


def test_the_plan_follows_from_the_seed_and_keeps_its_shape(tmp_path):
    a, b = scheduler(tmp_path, 1), scheduler(tmp_path, 1)
    assert a.events == b.events
    assert any(scheduler(tmp_path, seed).events != a.events for seed in range(2, 6))
    for seed in range(30):
        events = scheduler(tmp_path, seed).events
        assert events[1] == "scale_up" and events.count("scale_down") == 1
        assert events.index("scale_down") > 1
        assert all(i > events.index("scale_up") for i, e in enumerate(events) if e == "zombie")
        assert (events.count("kill"), events.count("term"), events.count("broker")) == (3, 2, 1)


async def test_every_planned_fault_is_carried_out_and_counted(tmp_path):
    s = scheduler(tmp_path, 7)
    s.first()
    try:
        await s.run(keep_going=lambda: False)
    finally:
        s.stop_all()
    c = s.counts
    assert (c.kills, c.kill_all, c.terms, c.zombies, c.bursts) == (3 + 3, 1, 2 + 1, 1, 2)
    assert (c.scale_up, c.scale_down, s.broker["kills"], c.broker_restarts) == (1, 1, 1, 1)
    assert c.term_exit_codes == [0, 0, 0]
    assert c.zombie_takeover_timeouts == 0 and c.unexpected_exits == []
    assert len(s.active) == 2 and s.last_fault_at is not None
    assert all(not x.alive for x in s.copiers)
    assert sum(c.kills_by_copier.values()) == c.kills


async def test_a_copier_that_exits_on_its_own_is_recorded_and_restarted(tmp_path):
    s = scheduler(tmp_path, 3, program="import sys; sys.exit(3)")
    s.first()
    s.active[0].proc.wait(10)
    s.check_running()
    s.stop_all()
    assert s.counts.unexpected_exits == [("c0", 3)]
    assert s.active[0].starts == 2
