"""The committers' protocol, with a scripted producer (pure logic).

The same behaviour runs against the real broker in tests/integration."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import errors as kafka
from aiokafka.structs import TopicPartition

from app.files.records import FileOutputs, OutRecord, index_headers
from app.kafka.committer import AtLeastOnceCommitter, ExactlyOnceCommitter, Outcome
from app.kafka.protocol.errors import (
    FencedInstanceIdError,
    NotAGroupMemberError,
    TransactionAbortableError,
)
from chaos.copier import AbortInjecting
from tests.unit.fakes import MemoryConsumer, ScriptedProducer

TP = TopicPartition("in", 0)
OFFSETS = {TP: 42}
ONE = [OutRecord("out", b"k", b"{}", [])]


async def commit(producer: ScriptedProducer, records=ONE):
    return await ExactlyOnceCommitter("group").commit(producer, OFFSETS, records)  # type: ignore[arg-type]


async def test_sends_then_offsets_then_commit():
    producer = ScriptedProducer()
    assert (await commit(producer)).outcome is Outcome.DONE
    assert producer.calls == ["begin", "send", "offsets", "commit"]
    assert producer.offsets == OFFSETS and producer.committed == [b"{}"]


async def test_under_transactions_v2_the_offsets_go_before_the_records():
    producer = ScriptedProducer()
    committer = ExactlyOnceCommitter("group", offsets_first=True)
    assert (await committer.commit(producer, OFFSETS, ONE)).outcome is Outcome.DONE  # type: ignore[arg-type]
    assert producer.calls == ["begin", "offsets", "send", "commit"]
    refused = ScriptedProducer({"offsets": kafka.IllegalGenerationError()})
    result = await committer.commit(refused, OFFSETS, ONE)  # type: ignore[arg-type]
    assert result.outcome is Outcome.FENCED and result.aborted
    assert refused.calls == ["begin", "offsets", "abort"]  # no record was sent


async def test_a_failed_send_aborts_and_asks_for_a_retry():
    producer = ScriptedProducer({"send": kafka.KafkaTimeoutError()})
    result = await commit(producer)
    assert result.outcome is Outcome.RETRY and result.aborted and not result.refused
    assert producer.calls == ["begin", "send", "offsets", "abort"]
    assert producer.committed == []


async def test_an_unknown_commit_outcome_is_never_aborted():
    producer = ScriptedProducer({"commit": kafka.KafkaTimeoutError()})
    assert (await commit(producer)).outcome is Outcome.UNKNOWN
    assert "abort" not in producer.calls


@pytest.mark.parametrize("step", ["begin", "offsets", "commit"])
async def test_fencing_at_any_step_is_reported_without_an_abort(step):
    producer = ScriptedProducer({step: kafka.ProducerFenced()})
    assert (await commit(producer)).outcome is Outcome.FENCED
    assert "abort" not in producer.calls


@pytest.mark.parametrize("refusal", [
    kafka.IllegalGenerationError(), kafka.UnknownMemberIdError(), FencedInstanceIdError(),
    NotAGroupMemberError()])
async def test_offsets_the_group_refuses_are_aborted_and_reported_fenced(refusal):
    producer = ScriptedProducer({"offsets": refusal})
    result = await commit(producer)
    assert result.outcome is Outcome.FENCED and result.aborted
    assert producer.calls[-1] == "abort" and producer.committed == []


async def test_a_transaction_the_broker_calls_abortable_is_aborted_and_retried():
    producer = ScriptedProducer({"offsets": TransactionAbortableError()})
    result = await commit(producer)
    assert result.outcome is Outcome.RETRY and result.aborted
    assert producer.calls[-1] == "abort"


async def test_a_failed_abort_makes_the_producer_unusable():
    producer = ScriptedProducer({"send": kafka.KafkaTimeoutError(),
                                 "abort": kafka.KafkaConnectionError()})
    assert (await commit(producer)).outcome is Outcome.FATAL


async def test_a_refused_record_is_aborted_and_reported_as_refused():
    producer = ScriptedProducer({"send": kafka.MessageSizeTooLargeError()})
    result = await commit(producer)
    assert result.outcome is Outcome.RETRY and result.refused


async def test_records_are_packed_into_batches_in_order_per_key():
    records = [OutRecord("out", b"ab"[i % 2:i % 2 + 1], str(i).encode(), []) for i in range(7)]
    producer = ScriptedProducer()
    assert (await commit(producer, records)).outcome is Outcome.DONE
    assert sorted(producer.sent) == sorted(r.value for r in records), "each record once"
    for key in (b"a", b"b"):
        mine = [r.value for r in records if r.key == key]
        assert [v for v in producer.sent if v in mine] == mine
    assert 4 <= producer.calls.count("send") <= 5  # batches of two, not one send per record


async def test_offsets_join_while_the_sends_are_in_flight_and_the_commit_waits_for_them():
    acks: list[asyncio.Future] = []

    class AcksAfterOffsets(ScriptedProducer):
        async def send_batch(self, batch, topic, *, partition):
            await super().send_batch(batch, topic, partition=partition)
            acks.append(asyncio.get_running_loop().create_future())
            asyncio.get_running_loop().call_later(0.02, acks[-1].set_result, None)
            return acks[-1]

        async def send_offsets_to_transaction(self, offsets, group_id):
            assert acks and not any(f.done() for f in acks), "offsets before any ack"
            await super().send_offsets_to_transaction(offsets, group_id)

        async def commit_transaction(self):
            assert all(f.done() for f in acks), "commit only after every ack"
            await super().commit_transaction()

    records = [OutRecord("out", b"k", str(i).encode(), []) for i in range(5)]
    producer = AcksAfterOffsets()
    assert (await commit(producer, records)).outcome is Outcome.DONE
    assert producer.calls == ["begin", "send", "send", "send", "offsets", "commit"]


async def test_a_failed_later_batch_aborts_the_whole_transaction():
    records = [OutRecord("out", b"k", str(i).encode(), []) for i in range(5)]
    producer = ScriptedProducer({"send": [None, kafka.KafkaTimeoutError()]})  # type: ignore[list-item]
    result = await commit(producer, records)
    assert result.outcome is Outcome.RETRY
    assert producer.calls == ["begin", "send", "send", "send", "offsets", "abort"]
    assert producer.committed == []


async def test_at_least_once_sends_then_commits_the_offset_without_a_transaction():
    consumer, producer = MemoryConsumer(), ScriptedProducer()
    result = await AtLeastOnceCommitter(consumer).commit(producer, OFFSETS, ONE)  # type: ignore[arg-type]
    assert result.outcome is Outcome.DONE and not result.aborted
    assert producer.calls == ["send"] and consumer.offsets == OFFSETS


async def test_at_least_once_leaves_the_offset_when_a_send_fails():
    consumer = MemoryConsumer()
    producer = ScriptedProducer({"send": kafka.KafkaTimeoutError()})
    result = await AtLeastOnceCommitter(consumer).commit(producer, OFFSETS, ONE)  # type: ignore[arg-type]
    assert result.outcome is Outcome.RETRY and not result.aborted
    assert consumer.offsets == {}


@pytest.mark.parametrize("offsets_first", [False, True], ids=["v1", "v2"])
async def test_injected_aborts_come_after_the_records_are_written(offsets_first):
    draws = iter([0.1, 0.9])  # the first commit is drawn for an abort, the second not
    committer = ExactlyOnceCommitter("group", offsets_first=offsets_first)
    injecting = AbortInjecting(committer, 0.5, lambda: next(draws))
    producer = ScriptedProducer()
    first = await injecting.commit(producer, OFFSETS, ONE)  # type: ignore[arg-type]
    assert first.outcome is Outcome.RETRY and producer.sent  # written, then aborted
    second = await injecting.commit(producer, OFFSETS, ONE)  # type: ignore[arg-type]
    assert second.outcome is Outcome.DONE
    steps = ["offsets", "send"] if offsets_first else ["send", "offsets"]
    assert producer.calls == ["begin", *steps, "abort", "begin", *steps, "commit"]


async def test_batches_waiting_in_the_client_stay_within_the_send_window(monkeypatch):
    monkeypatch.setattr("app.kafka.batches.SEND_WINDOW_BYTES", 10)
    unacked: list[asyncio.Future] = []
    most = 0

    class SlowAcks(ScriptedProducer):
        async def send_batch(self, batch, topic, *, partition):
            nonlocal most
            future = asyncio.get_running_loop().create_future()
            unacked.append(future)
            waiting = [f for f in unacked if not f.done()]
            most = max(most, len(waiting))
            asyncio.get_running_loop().call_later(0.001, future.set_result, None)
            self.calls.append("send")
            return future

    records = [OutRecord("out", b"k", b"x" * 3, []) for i in range(40)]  # 6 bytes a batch
    result = await commit(SlowAcks(), records)
    assert result.outcome is Outcome.DONE
    assert len(unacked) == 20 and most <= 3, "at most a window's worth (+1) unacknowledged"


async def test_a_file_s_compact_outputs_are_sent_as_the_records_they_stand_for():
    shared = [("source-topic", b"in"), ("source-offset", b"7")]
    out = FileOutputs("out", b"http://f/1", [b'{"n":%d}' % n for n in range(5)], shared,
                      ("count", b"5"))
    alone = OutRecord("dlq", b"k", b"letter", [("reason", b"x")])
    producer = ScriptedProducer()
    assert (await commit(producer, [out, alone])).outcome is Outcome.DONE
    want = [(r.key, r.value, r.headers) for r in [*out, alone]]
    assert producer.appended == want
    assert want[3][2] == [*shared, ("index", b"3"), ("count", b"5")]
    assert producer.calls.count("send") == 4  # batches of two per partition: 3 + 1


def test_index_headers_past_the_shared_ones_are_made_for_the_file(monkeypatch):
    monkeypatch.setattr("app.files.records._INDEX_CACHED", 3)
    monkeypatch.setattr("app.files.records._index_cache", [])
    assert index_headers(5) == [("index", str(n).encode()) for n in range(5)]
    assert index_headers(2) == [("index", b"0"), ("index", b"1")]
    from app.files import records
    assert len(records._index_cache) == 3


class HangingProducer(ScriptedProducer):
    """A broker that stops answering at one step: aiokafka would retry it forever."""

    def __init__(self, hang_at: str) -> None:
        super().__init__()
        self.hang_at = hang_at

    async def _step(self, name: str) -> None:
        await super()._step(name)
        if name == self.hang_at:
            await asyncio.Event().wait()


@pytest.mark.parametrize(("step", "outcome"), [("offsets", Outcome.TIMED_OUT),
                                               ("commit", Outcome.UNKNOWN)])
async def test_a_commit_that_hangs_ends_at_the_transaction_timeout(step, outcome):
    producer = HangingProducer(step)
    committer = ExactlyOnceCommitter("group", transaction_timeout_s=0.2)
    result = await asyncio.wait_for(committer.commit(producer, OFFSETS, ONE), 5)  # type: ignore[arg-type]
    assert result.outcome is outcome and isinstance(result.cause, TimeoutError)
    assert "abort" not in producer.calls, "a new producer settles it, never an abort here"


@pytest.mark.parametrize("error", [kafka.TopicAuthorizationFailedError({"dlq"}),
                                   kafka.TransactionalIdAuthorizationFailed("t"),
                                   kafka.GroupAuthorizationFailedError("g")])
async def test_an_acl_refusal_is_its_own_outcome_and_not_aborted(error):
    producer = ScriptedProducer({"offsets": error})
    result = await commit(producer)
    assert result.outcome is Outcome.UNAUTHORIZED and result.cause is error
    assert "abort" not in producer.calls
