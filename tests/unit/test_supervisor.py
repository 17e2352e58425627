"""The supervisor on fakes: a task that ends on its own is replaced while its partition is
assigned, after the right wait; revocation closes it; readiness follows the tasks."""

from __future__ import annotations

import asyncio

from aiokafka import errors as kafka
from aiokafka.structs import TopicPartition

from app.task.partition import TaskState
from app.task.supervisor import Supervisor
from tests.unit.fakes import (
    FileDownloader,
    ScriptedProducer,
    Sleeps,
    assigned_consumer,
    context,
    record,
    settings,
    until,
)

TP = TopicPartition("in", 0)


def supervisor_with(producers: list[ScriptedProducer], *flags: str
                    ) -> tuple[Supervisor, Sleeps, list[ScriptedProducer]]:
    consumer = assigned_consumer(TP)
    made: list[ScriptedProducer] = []

    def make_producer(partition: int) -> ScriptedProducer:
        made.append(producers.pop(0) if producers else ScriptedProducer())
        return made[-1]

    sleeps = Sleeps()
    ctx = context(settings("--session-timeout-ms", "7000", *flags), consumer,
                  FileDownloader({"http://f/0": b'{"a":1}'}), make_producer, sleeps)
    return Supervisor(ctx), sleeps, made


async def test_a_failed_task_is_replaced_by_a_new_producer_after_a_short_backoff():
    supervisor, sleeps, made = supervisor_with(
        [ScriptedProducer({"commit": kafka.KafkaTimeoutError()})], "--retry-backoff-s", "1",
        "--retry-backoff-max-s", "10")
    supervisor.assign([TP])
    await until(lambda: supervisor.ready, "first task running")
    supervisor.deliver({TP: [record(0, "http://f/0")]})
    await until(lambda: len(made) == 2 and supervisor.ready, "a second producer")
    assert made[0].calls[-1] == "stop", "the failed producer is stopped"
    assert 0.5 <= sleeps.delays[0] <= 1.0, "the first backoff, with jitter: no fencing wait"
    assert supervisor.stats.totals["restarts"] == 1
    assert sample(supervisor, "txingest_task_restarts_total", partition="0", cause="failed") == 1
    await supervisor.close(1)


async def test_tasks_failing_in_a_row_back_off_longer_each_time_until_one_commits():
    failing = [ScriptedProducer({"commit": kafka.KafkaTimeoutError()}) for _ in range(4)]
    # The fifth commits its first record, then fails: the count starts again.
    failing.append(ScriptedProducer({"commit": [None, kafka.KafkaTimeoutError()]}))  # type: ignore[list-item]
    supervisor, sleeps, made = supervisor_with(failing, "--retry-backoff-s", "1",
                                               "--retry-backoff-max-s", "100")
    supervisor.assign([TP])
    for tries in range(1, 6):
        await until(lambda n=tries: len(made) == n and supervisor.ready, f"task {tries} running")
        supervisor.deliver({TP: [record(0, "http://f/0")]})
    await until(lambda: made[4].committed != [], "the fifth producer commits")
    supervisor.deliver({TP: [record(1, "http://f/0")]})
    await until(lambda: len(made) == 6, "the fifth task failed and was replaced")
    assert len(sleeps.delays) == 5, sleeps.delays
    for attempt, delay in enumerate(sleeps.delays[:4], 1):
        assert 2 ** (attempt - 1) * 0.5 <= delay <= 2 ** (attempt - 1), sleeps.delays
    assert 0.5 <= sleeps.delays[4] <= 1, "after a commit, the first backoff again"
    await supervisor.close(1)


async def test_an_acl_refusal_waits_logs_once_and_shows_in_a_gauge(caplog):
    denied = kafka.TopicAuthorizationFailedError({"dlq"})
    producers = [ScriptedProducer({"commit": denied}) for _ in range(3)]
    supervisor, sleeps, made = supervisor_with(producers, "--retry-backoff-max-s", "45")
    supervisor.assign([TP])
    for tries in range(1, 4):
        await until(lambda n=tries: len(made) == n and supervisor.ready, f"task {tries} running")
        supervisor.deliver({TP: [record(0, "http://f/0")]})
    await until(lambda: len(made) == 4 and supervisor.ready, "the fourth producer")
    assert sleeps.delays[:3] == [45.0, 45.0, 45.0], "RETRY_BACKOFF_MAX_S between tries"
    errors = [r for r in caplog.records if getattr(r, "event", None) == "unauthorized"]
    assert len(errors) == 1 and errors[0].levelname == "ERROR", "one line, not one per try"
    supervisor.observe()
    assert sample(supervisor, "txingest_partition_unauthorized", partition="0") == 1
    assert sample(supervisor, "txingest_task_restarts_total", partition="0",
                  cause="unauthorized") == 3
    supervisor.deliver({TP: [record(0, "http://f/0")]})
    await until(lambda: made[-1].committed != [], "committed once the ACL is fixed")
    supervisor.observe()
    assert sample(supervisor, "txingest_partition_unauthorized", partition="0") == 0
    await supervisor.close(1)


async def test_commits_before_a_refusal_are_not_taken_for_the_acl_fixed(caplog):
    denied = kafka.TopicAuthorizationFailedError({"dlq"})
    supervisor, _, made = supervisor_with([ScriptedProducer({"commit": [None, denied]})])
    supervisor.assign([TP])
    await until(lambda: supervisor.ready, "first task running")
    supervisor.observe()  # sees the start offset, 0
    supervisor.deliver({TP: [record(0, "http://f/0")]})
    await until(lambda: made[0].committed != [], "the first record committed")
    supervisor.consumer.offsets[TP] = 1  # the group's offset, as the broker now has it
    supervisor.deliver({TP: [record(1, "http://f/0")]})
    await until(lambda: len(made) == 2 and supervisor.ready, "a task after the refusal")
    supervisor.observe()  # the new task starts at 1, committed before the refusal
    assert sample(supervisor, "txingest_partition_unauthorized", partition="0") == 1
    assert not [r for r in caplog.records if getattr(r, "event", None) == "authorized"]
    await supervisor.close(1)


async def test_lag_and_stall_keep_moving_for_a_partition_nobody_fetches():
    supervisor, _, _ = supervisor_with([])
    supervisor.assign([TP])
    await until(lambda: supervisor.ready, "task running")
    consumer = supervisor.consumer
    consumer.stable[TP] = 3  # type: ignore[attr-defined]  # its last fetch, then paused
    consumer.listed[TP] = 40  # type: ignore[attr-defined]  # records arrived since
    supervisor.observe()
    assert sample(supervisor, "txingest_consumer_lag", partition="0") == 3
    await supervisor.list_stable_offsets()
    supervisor.observe()
    assert sample(supervisor, "txingest_consumer_lag", partition="0") == 40
    await supervisor.revoke([TP], 1)
    assert sample(supervisor, "txingest_consumer_lag", partition="0") is None, "removed"
    assert sample(supervisor, "txingest_partition_stalled_seconds", partition="0") is None


def sample(supervisor: Supervisor, name: str, **labels: str) -> float | None:
    return supervisor.stats.registry.get_sample_value(name, labels)


async def test_a_fenced_task_waits_a_session_timeout_before_its_replacement():
    supervisor, sleeps, made = supervisor_with(
        [ScriptedProducer({"begin": kafka.ProducerFenced()})])
    supervisor.assign([TP])
    await until(lambda: supervisor.ready, "first task running")
    supervisor.deliver({TP: [record(0, "http://f/0")]})
    await until(lambda: len(made) == 2, "a replacement")
    assert 7.0 in sleeps.delays
    await supervisor.close(1)


async def test_a_task_that_cannot_start_is_retried_with_growing_backoff():
    failing = [ScriptedProducer({"start": kafka.KafkaConnectionError()}) for _ in range(4)]
    supervisor, sleeps, made = supervisor_with(failing, "--retry-backoff-s", "1",
                                               "--retry-backoff-max-s", "100")
    supervisor.assign([TP])
    await until(lambda: len(made) == 5 and supervisor.ready, "started on the fifth try")
    assert len(sleeps.delays) == 4
    for attempt, delay in enumerate(sleeps.delays, 1):
        assert 2 ** (attempt - 1) * 0.5 <= delay <= 2 ** (attempt - 1)
    await supervisor.close(1)


async def test_revoked_partitions_are_closed_and_not_replaced():
    supervisor, _, made = supervisor_with([])
    supervisor.assign([TP])
    await until(lambda: supervisor.ready, "task running")
    task = supervisor.slots[TP].task
    await supervisor.revoke([TP], 1)
    assert task.state is TaskState.CLOSED and supervisor.slots == {}
    assert len(made) == 1 and supervisor.stats.totals["restarts"] == 0


async def test_revoking_a_task_still_waiting_to_restart_cancels_it():
    supervisor, sleeps, made = supervisor_with(
        [ScriptedProducer({"start": kafka.KafkaConnectionError()})])
    sleeps.hold = True  # the replacement's backoff never ends by itself
    supervisor.assign([TP])
    await until(lambda: len(sleeps.delays) == 1, "the replacement waiting out its backoff")
    life = supervisor.slots[TP].life
    await asyncio.wait_for(supervisor.revoke([TP], 1), 5)
    assert life.cancelled() and supervisor.slots == {}
    assert len(made) == 1, "no producer made for a revoked partition"
