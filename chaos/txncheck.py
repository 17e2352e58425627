"""After a chaos run, Kafka's own transaction tool (tools/kafka_tools.py) on the cluster:

- no transaction of the run left open: ``list`` shows none of the run's ids in an
  open state (``Ongoing``, ``Prepare*``) once the copiers are stopped, waited for up to
  ``settle_s`` (a commit's markers take a moment to be written);
- none hanging: ``find-hanging`` on every broker finds no transaction on the run's
  topics, or of the run's producers, that its coordinator has forgotten;
- every transactional id of the run has the service's form
  (:func:`service_transactional_ids`), and the report lists them.

The run's ids are those containing its unique group name (the service's default
TRANSACTIONAL_ID_PREFIX): other users of a shared cluster are left out. :func:`judge`
is pure (tests/chaos/test_txncheck.py); :func:`check` asks the cluster.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient

from tools import kafka_tools
from tools.kafka_tools import Hanging, Listed

SETTLE_S = 30.0
POLL_S = 1.0


def service_transactional_ids(prefix: str, input_topic: str,
                              pods: Sequence[str]) -> re.Pattern[str]:
    """The form of every transactional id the service may use in a run: the one place
    to change when the id scheme changes.

    ``{prefix}-{pod}-{n}``: a slot of one of ``pods`` (the copiers' POD_NAMEs), the
    default TRANSACTIONAL_ID_SCHEME (app/config.py, ``Settings.transactional_id``);
    ``input_topic`` is the form of the fallback scheme, ``{prefix}-{input_topic}-{p}``,
    which the chaos suite does not run."""
    del input_topic
    names = "|".join(map(re.escape, pods))
    return re.compile(rf"{re.escape(prefix)}-(?:{names})-[0-9]+")


@dataclass(frozen=True)
class Scope:
    """What belongs to the run: transactional ids containing ``token``, and the
    partitions of ``topics``."""

    token: str
    topics: frozenset[str]


@dataclass
class TxnVerdict:
    ids: list[str] = field(default_factory=list)             # the run's, as listed
    open: list[str] = field(default_factory=list)            # "id: state"
    hanging: list[str] = field(default_factory=list)         # find-hanging rows
    unexpected_ids: list[str] = field(default_factory=list)  # not of the service's form
    failures: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"transactional_ids": len(self.ids), "open_after_run": len(self.open),
                "hanging_transactions": len(self.hanging),
                "unexpected_transactional_ids": len(self.unexpected_ids)}

    def report(self) -> dict:
        return {"transactional_ids": self.ids, "open_after_run": self.open,
                "hanging": self.hanging, "unexpected_transactional_ids": self.unexpected_ids}


def judge(listed: Sequence[Listed], hanging: Sequence[Hanging],
          pattern: re.Pattern[str] | None, scope: Scope) -> TxnVerdict:
    """The verdict on what the tool saw; ``pattern`` None: any form of id is allowed
    (a copier that is not the service)."""
    mine = sorted((t for t in listed if scope.token in t.transactional_id),
                  key=lambda t: t.transactional_id)
    producers = {t.producer_id for t in mine}
    v = TxnVerdict(ids=[t.transactional_id for t in mine])
    v.open = [f"{t.transactional_id}: {t.state}" for t in mine if t.open]
    v.hanging = [f"{h.topic}-{h.partition} producer {h.producer_id} epoch "
                 f"{h.producer_epoch} from offset {h.start_offset}, {h.duration_min} min"
                 for h in hanging if h.topic in scope.topics or h.producer_id in producers]
    if pattern is not None:
        v.unexpected_ids = [i for i in v.ids if not pattern.fullmatch(i)]
        if not v.ids:
            v.failures.append("transactional_ids=0: kafka-transactions list shows no "
                              f"transactional id of the run (containing {scope.token!r})")
    if v.open:
        v.failures.append(f"open_after_run={len(v.open)}: transactions of the run still "
                          f"open after the copiers stopped: {', '.join(v.open[:5])}")
    if v.hanging:
        v.failures.append(f"hanging_transactions={len(v.hanging)}: kafka-transactions "
                          f"find-hanging: {'; '.join(v.hanging[:5])}")
    if v.unexpected_ids:
        v.failures.append(f"unexpected_transactional_ids={len(v.unexpected_ids)}: not of the "
                          f"form {pattern.pattern if pattern else ''}: "
                          f"{', '.join(v.unexpected_ids[:5])}")
    return v


async def check(bootstrap: str, pattern: re.Pattern[str] | None, scope: Scope, *,
                settle_s: float = SETTLE_S, version: str | None = None) -> TxnVerdict:
    """Ask the cluster (``list`` until none of the run's transactions is open, at most
    ``settle_s``; then ``find-hanging`` on every broker) and judge."""
    deadline = time.monotonic() + settle_s
    while True:
        listed = await asyncio.to_thread(kafka_tools.list_transactions, bootstrap, version)
        still_open = [t for t in listed if t.open and scope.token in t.transactional_id]
        if not still_open or time.monotonic() > deadline:
            break
        await asyncio.sleep(POLL_S)
    hanging: list[Hanging] = []
    for broker_id in await broker_ids(bootstrap):
        hanging += await asyncio.to_thread(kafka_tools.find_hanging, bootstrap, broker_id,
                                           version)
    return judge(listed, hanging, pattern, scope)


async def broker_ids(bootstrap: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    return sorted(int(b["node_id"]) for b in cluster["brokers"])
