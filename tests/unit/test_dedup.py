"""The deduplication store's rules (pure logic): keys, normalised URLs, the changelog
records a commit writes, retention and the entry limit, and restore."""

from __future__ import annotations

import pytest
from aiokafka.structs import TopicPartition

from app.dedup.store import (
    DIGEST_BYTES,
    Deduplicator,
    DedupStore,
    content_key,
    normalise_url,
    url_key,
)
from app.files.records import OutRecord, Prepared
from tests.unit.fakes import record

CHANGELOG = TopicPartition("group-dedup", 3)
DAY = 86_400.0


@pytest.mark.parametrize(("a", "b"), [
    ("HTTP://Files.Example.com/a.json", "http://files.example.com/a.json"),
    ("http://files.example.com:80/a.json", "http://files.example.com/a.json"),
    ("https://files.example.com:443/a.json#part", "https://files.example.com/a.json"),
])
def test_urls_that_name_the_same_file_have_one_key(a, b):
    assert url_key(a) == url_key(b) and len(url_key(a)) == DIGEST_BYTES


@pytest.mark.parametrize(("a", "b"), [
    ("http://files.example.com/a.json?sig=1", "http://files.example.com/a.json?sig=2"),
    ("http://files.example.com:8080/a.json", "http://files.example.com/a.json"),
    ("http://files.example.com/A.json", "http://files.example.com/a.json"),
    ("https://files.example.com/a.json", "http://files.example.com/a.json"),
])
def test_urls_that_differ_in_query_port_path_or_scheme_have_different_keys(a, b):
    assert url_key(a) != url_key(b)


def test_normalised_url_keeps_the_query_and_an_ipv6_host():
    assert normalise_url("http://[::1]:8080/x?q=1#f") == "http://[::1]:8080/x?q=1"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def prepared(key: bytes | None, dead: bool = False) -> Prepared:
    return Prepared([OutRecord("out", b"k", b"{}", [])], attempts=1, dedup_key=key,
                    reason="http_error" if dead else None)


def test_a_commit_writes_its_entry_and_a_repeat_writes_nothing_but_its_offset():
    clock = Clock(1_000_000.0)
    dedup = Deduplicator("url", DedupStore(10, 7 * DAY), CHANGELOG, clock)
    key = content_key(b"body")
    first = dedup.records(record(5, "http://x/a"), prepared(key))
    assert [r.topic for r in first] == ["out", CHANGELOG.topic]
    assert first[1].partition == CHANGELOG.partition and first[1].key == key
    dedup.committed(record(5, "http://x/a"), prepared(key))
    assert dedup.duplicate_of(prepared(key)) == 5
    assert dedup.records(record(9, "http://x/a"), prepared(key)) == []


def test_a_dead_letter_is_not_remembered():
    dedup = Deduplicator("url", DedupStore(10, DAY), CHANGELOG, Clock(DAY))
    key = url_key("http://x/a")
    letter = prepared(key, dead=True)
    assert [r.topic for r in dedup.records(record(1, "http://x/a"), letter)] == ["out"]
    dedup.committed(record(1, "http://x/a"), letter)
    assert dedup.duplicate_of(prepared(key)) is None


def test_retention_forgets_and_tombstones_in_the_next_transaction():
    clock = Clock(10 * DAY)
    dedup = Deduplicator("url", DedupStore(10, DAY), CHANGELOG, clock)
    old, new = url_key("http://x/old"), url_key("http://x/new")
    dedup.committed(record(1, "http://x/old"), prepared(old))
    clock.now += 2 * DAY
    dedup.committed(record(2, "http://x/new"), prepared(new))
    assert dedup.duplicate_of(prepared(old)) is None and len(dedup.store) == 1
    tombstones = dedup.tombstones()
    assert [(t.key, t.value, t.partition) for t in tombstones] == [(old, None, 3)]
    dedup.committed(record(3, "http://x/3"), prepared(url_key("http://x/3")))
    assert dedup.store.forgotten == []


def test_the_oldest_entries_go_past_the_entry_limit():
    store = DedupStore(max_entries=2, retention_s=DAY)
    for offset, name in enumerate("abc"):
        store.remember(url_key(name), offset, DAY)
    store.expire(DAY)
    assert store.first_offset(url_key("a")) is None and len(store) == 2
    assert store.forgotten == [url_key("a")]


def test_restore_applies_entries_and_tombstones_in_order():
    store = DedupStore(10, DAY)
    writer = Deduplicator("url", DedupStore(10, DAY), CHANGELOG, Clock(DAY))
    a, b = url_key("a"), url_key("b")
    entry_a = writer.records(record(1, "a"), prepared(a))[-1]
    entry_b = writer.records(record(2, "b"), prepared(b))[-1]
    store.restore([(a, entry_a.value), (b, entry_b.value), (a, None), (b"junk", b"x")])
    assert store.first_offset(a) is None and store.first_offset(b) == 2 and len(store) == 1
