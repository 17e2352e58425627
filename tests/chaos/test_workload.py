"""The chaos workload: deterministic files the service parses back byte for byte, poison
known up front, and a file server whose faults are all transient (real HTTP, the
service's own downloader; no Kafka)."""

from __future__ import annotations

import collections
import gzip

from app.errors import IngestError, Kind
from app.files.fetch import Downloader, DownloadLimits
from app.files.input_url import parse_input_url
from app.files.parse import parse_transactions
from app.files.parse_csv import parse_columns, parse_csv
from chaos.faultyserver import FaultyServer
from chaos.harness import SPOOL_THRESHOLD_BYTES
from chaos.workload import FORMATS, MAX_FILE_FAULTS, POISON, Workload
from chaos.workload_csv import CSV_COLUMNS, CSV_FORMATS

BASE = "http://127.0.0.1:8000"


def parse(body: bytes, fmt: str) -> list[bytes]:
    """The file's transactions as the service reads them (CSV with the copiers' mapping)."""
    if fmt in CSV_FORMATS:
        items = parse_csv(body, columns=parse_columns(CSV_COLUMNS), max_items=1000)
    else:
        items = parse_transactions(body, max_items=1000)
    return [item.value for item in items]


def test_files_are_deterministic_and_differ_by_seed():
    a, b, c = Workload(5), Workload(5), Workload(6)
    assert [a.spec(n) for n in range(50)] == [b.spec(n) for n in range(50)]
    assert [a.body(n) for n in range(50)] == [b.body(n) for n in range(50)]
    assert [a.items(n) for n in range(50)] != [c.items(n) for n in range(50)]


def test_every_format_parses_back_to_the_items_byte_for_byte():
    w = Workload(3, poison_rate=0.0)
    seen = collections.Counter()
    for n in range(400):
        spec = w.spec(n)
        body, headers = w.body(n)
        if dict(headers).get("Content-Encoding") == "gzip":
            import gzip
            body = gzip.decompress(body)
        elif spec.fmt in ("gzip-file", "csv-gzip"):
            import gzip
            body = gzip.decompress(body)
        assert parse(body, spec.fmt) == w.items(n), (n, spec)
        assert 1 <= spec.count <= 50
        seen[spec.fmt] += 1
        seen["exact"] += spec.exact_numbers
    assert set(FORMATS) <= set(seen) and seen["exact"] > 0


def test_input_records_map_back_to_what_they_must_produce():
    w = Workload(4, poison_rate=0.2)
    kinds = collections.Counter()
    for n in range(300):
        value = w.input_value(n, BASE)
        want = w.expected(value)
        spec = w.spec(n)
        assert want is not None and want.n == n
        kinds[spec.poison or spec.spelling] += 1
        if spec.poison == "bad_input":
            assert want.url is None and want.dlq_reason == "invalid_input_record"
            continue
        assert parse_input_url(value) == want.url  # the service reads the same URL
        if spec.poison:
            assert want.items is None and want.dlq_reason == POISON[spec.poison]
        else:
            assert want.items == tuple(w.items(n))
    assert set(POISON) | {"text", "json", "object"} <= set(kinds)
    assert w.expected(b"something else") is None


async def test_every_fault_is_transient_and_every_file_is_served_in_the_end():
    w = Workload(9, poison_rate=0.15, fault_rate=0.9, delay_rate=0.1)
    server = await FaultyServer(w, stall_s=1.0).start()  # delays stay under 0.4 s
    downloader = Downloader(DownloadLimits(read_timeout_s=0.6, allow_private_networks=True))
    await downloader.start()
    reasons: collections.Counter[str] = collections.Counter()
    try:
        for n in range(60):
            spec = w.spec(n)
            want = w.expected(w.input_value(n, server.base_url))
            assert want is not None
            if spec.poison == "bad_input":
                continue
            for _ in range(2 * MAX_FILE_FAULTS + 1):  # a reset may take two requests
                try:
                    items = parse(await downloader.download(want.url), spec.fmt)
                except IngestError as exc:
                    reasons[exc.reason] += 1
                    if exc.kind is Kind.POISON:
                        assert exc.reason == spec.dlq_reason, (n, spec)
                        break
                    continue
                assert spec.poison is None and items == w.items(n)
                break
            else:
                raise AssertionError(f"file {n} was never served: {spec}")
        server.burst(0.5)
        try:
            await downloader.download(f"{server.base_url}/{w.spec(0).path}")
        except IngestError as exc:
            assert exc.kind is Kind.TRANSIENT and exc.reason == "http_transient"
    finally:
        await downloader.close()
        await server.close()
    assert {"http_transient", "truncated_body", "download_timeout", "connection_error"} <= set(
        reasons)
    injected = {k for k in server.counts if k.startswith("fault_")}
    assert injected == {"fault_503", "fault_500", "fault_502", "fault_429", "fault_reset",
                        "fault_truncated", "fault_stall"}
    assert server.counts["burst_503"] == 1


async def test_a_truncated_answer_is_never_a_whole_body_even_for_an_empty_one():
    """A 404 file's good body is empty: its truncated answer must still fall short."""
    w = Workload(1, poison_rate=1.0, fault_rate=1.0)
    cases = [n for n in range(400) if w.spec(n).poison == "http_404"
             and "truncated" in w.spec(n).faults][:5]
    assert cases
    server = await FaultyServer(w, stall_s=1.0).start()
    downloader = Downloader(DownloadLimits(read_timeout_s=0.6, allow_private_networks=True))
    await downloader.start()
    try:
        for n in cases:
            url = w.expected(w.input_value(n, server.base_url)).url
            outcomes = []
            for _ in range(2 * MAX_FILE_FAULTS + 1):
                try:
                    outcomes.append(await downloader.download(url))
                except IngestError as exc:
                    outcomes.append(exc.kind)
                    if exc.kind is Kind.POISON:
                        break
            assert outcomes[-1] is Kind.POISON and Kind.POISON not in outcomes[:-1], outcomes
            assert all(o is Kind.TRANSIENT for o in outcomes[:-1]), outcomes
    finally:
        await downloader.close()
        await server.close()


def test_feed_order_publishes_every_file_and_repeats_a_share_later():
    from chaos.workload import Workload

    order = Workload(5).feed_order(2000, repeat_rate=0.25)
    counts = collections.Counter(order)
    assert set(counts) == set(range(2000))
    repeated = [n for n, c in counts.items() if c > 1]
    assert 0.2 < len(repeated) / 2000 < 0.3 and max(counts.values()) <= 3
    for n in repeated[:50]:
        first = order.index(n)
        assert all(order[i] != n or i == first for i in range(first)), "the original first"
    assert order == Workload(5).feed_order(2000, repeat_rate=0.25), "deterministic"


def test_mark_repeats_expects_nothing_from_a_good_file_s_later_copies():
    from chaos.workload import Expected, mark_repeats

    good = Expected(7, "http://x/f/7.json", (b"{}",), None)
    poison = Expected(8, "http://x/f/8.json", None, "http_error")
    marked = mark_repeats({(0, 5): good, (0, 9): good, (1, 3): good, (0, 2): poison,
                           (0, 4): poison})
    assert marked[(0, 5)].items == (b"{}",) and marked[(1, 3)].items == (b"{}",)
    assert marked[(0, 9)].items == (), "a later copy in the same partition writes nothing"
    assert marked[(0, 4)] == poison, "every copy of a poison file is dead-lettered"


def test_json_arrays_stay_below_the_spool_threshold_while_most_other_files_pass_it():
    """A spooled JSON array is dead-lettered (array_too_large), which the checker does not
    expect: the spooled tiers rely on arrays staying in memory."""
    workload, sizes = Workload(seed=11), collections.defaultdict(list)
    for n in range(2000):
        spec = workload.spec(n)
        if not spec.poison:
            body, _ = workload.body(n)
            if spec.fmt in ("gzip-file", "gzip-encoding", "csv-gzip"):
                body = gzip.decompress(body)
            sizes[spec.fmt].append(len(body))
    assert max(sizes["array"]) < SPOOL_THRESHOLD_BYTES / 2
    others = [size for fmt, found in sizes.items() if fmt != "array" for size in found]
    assert sum(size > SPOOL_THRESHOLD_BYTES for size in others) > len(others) / 3
