"""Kafka's transaction tool's output, parsed, and the chaos run's verdict on it (no
Kafka: the text is as the tool printed it on 4.4.0 and 3.9.1, the same on both)."""

from __future__ import annotations

import re

import pytest

from chaos.run import app_settings
from chaos.txncheck import Scope, judge, service_transactional_ids
from tools.kafka_tools import Hanging, Listed, ToolOutputError, parse_hanging, parse_list

# `kafka-transactions.sh list` on 4.4.0 (3.9.1 prints the same): padded cells, tabs,
# a tab at the end of every line.
LISTED = (
    "TransactionalId\tCoordinator\tProducerId\tTransactionState\t\n"
    "grp-in-0       \t1          \t0         \tCompleteCommit  \t\n"
    "grp-in-1       \t1          \t1         \tOngoing         \t\n"
)
HANGING_HEADER = ("Topic\tPartition\tProducerId\tProducerEpoch\tCoordinatorEpoch\t"
                  "StartOffset\tLastTimestamp\tDuration(min)\t\n")
# A row in the header's form (no real broker leaves one behind on purpose).
HANGING_ROW = "out-x\t3        \t4005      \t2            \t0               \t117        \t" \
              "1796661087172\t22           \t\n"

RUN = "chaos-ci-1-2-group"
SCOPE = Scope(RUN, frozenset({"chaos-ci-1-2-in", "chaos-ci-1-2-out"}))
PATTERN = service_transactional_ids(RUN, "chaos-ci-1-2-in", ["chaos-ci-1-2-0"])


def test_list_gives_each_transactional_id_its_producer_and_state():
    assert parse_list(LISTED) == [Listed("grp-in-0", 1, 0, "CompleteCommit"),
                                  Listed("grp-in-1", 1, 1, "Ongoing")]
    assert [t.open for t in parse_list(LISTED)] == [False, True]


def test_an_empty_listing_is_the_header_alone():
    assert parse_list(LISTED.splitlines(keepends=True)[0]) == []


def test_find_hanging_rows_are_read_and_its_bare_header_is_none():
    assert parse_hanging(HANGING_HEADER) == []
    assert parse_hanging(HANGING_HEADER + HANGING_ROW) == [Hanging("out-x", 3, 4005, 2, 117, 22)]


@pytest.mark.parametrize("text", ["", "Error: something else\n",
                                  "TransactionalId\tProducerId\n",
                                  LISTED.replace("\t1          \t0", "\tone\t0")])
def test_output_that_is_not_the_table_is_refused_clearly(text):
    with pytest.raises(ToolOutputError):
        parse_list(text)


def test_the_service_s_ids_have_the_form_the_check_expects():
    """The service's own id function against the chaos check's pattern: when one
    changes without the other, this fails."""
    names = {"input": "chaos-ci-1-2-in", "group": RUN}
    for slot in (0, 7, 127):
        assert PATTERN.fullmatch(app_settings(names, "chaos-ci-1-2-0").transactional_id(slot))
    assert not PATTERN.fullmatch(app_settings(names, "another-pod").transactional_id(0))
    assert not PATTERN.fullmatch(f"{RUN}-redrive-job")
    assert not PATTERN.fullmatch(f"broken-{RUN}-chaos-ci-1-2-0")


def test_a_clean_run_passes_and_names_its_ids():
    listed = [Listed(f"{RUN}-chaos-ci-1-2-0-{p}", 1, p, "CompleteCommit") for p in (1, 0)]
    verdict = judge(listed, [], PATTERN, SCOPE)
    assert verdict.failures == []
    assert verdict.ids == [f"{RUN}-chaos-ci-1-2-0-0", f"{RUN}-chaos-ci-1-2-0-1"]
    assert verdict.counts()["transactional_ids"] == 2


def test_a_transaction_of_the_run_left_open_fails_it():
    listed = [Listed(f"{RUN}-chaos-ci-1-2-0-0", 1, 5, "Ongoing"),
              Listed(f"{RUN}-chaos-ci-1-2-0-1", 2, 6, "PrepareCommit"),
              Listed("someone-else-0", 1, 7, "Ongoing")]   # not the run's
    verdict = judge(listed, [], PATTERN, SCOPE)
    assert verdict.open == [f"{RUN}-chaos-ci-1-2-0-0: Ongoing",
                            f"{RUN}-chaos-ci-1-2-0-1: PrepareCommit"]
    assert [f.split(":")[0] for f in verdict.failures] == ["open_after_run=2"]


def test_a_hanging_transaction_on_the_run_s_topics_or_of_its_producers_fails_it():
    listed = [Listed(f"{RUN}-chaos-ci-1-2-0-0", 1, 5, "CompleteAbort")]
    hanging = [Hanging("chaos-ci-1-2-out", 0, 99, 0, 10, 0),    # the run's topic
               Hanging("__consumer_offsets", 3, 5, 0, 4, 0),    # the run's producer
               Hanging("other-topic", 1, 77, 0, 4, 0)]          # neither
    verdict = judge(listed, hanging, PATTERN, SCOPE)
    assert len(verdict.hanging) == 2
    assert verdict.failures[0].startswith("hanging_transactions=2: kafka-transactions")


def test_ids_not_of_the_service_s_form_fail_the_run_unless_the_copier_is_not_the_service():
    listed = [Listed(f"{RUN}-chaos-ci-1-2-0-0", 1, 5, "CompleteCommit"),
              Listed(f"{RUN}-chaos-ci-1-2-in-0", 1, 6, "CompleteCommit")]  # per partition
    verdict = judge(listed, [], PATTERN, SCOPE)
    assert verdict.unexpected_ids == [f"{RUN}-chaos-ci-1-2-in-0"]
    assert verdict.failures[0].startswith("unexpected_transactional_ids=1: not of the form")
    assert judge(listed, [], None, SCOPE).failures == []


def test_a_run_with_no_id_of_the_service_fails_since_nothing_was_checked():
    verdict = judge([Listed("someone-else-0", 1, 7, "CompleteCommit")], [], PATTERN, SCOPE)
    assert verdict.ids == []
    assert re.match(r"transactional_ids=0: ", verdict.failures[0])
