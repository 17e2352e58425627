"""The memory benchmark's pure parts: its generated files and its reading of /metrics."""

import gzip
import hashlib
import subprocess
import sys

import orjson
import pytest

from bench.memory.data import LONGEST_LINE, cached_gzip, lines_of_count, lines_of_size
from bench.memory.probe import MemorySampler, gauge, loop_lag
from bench.memory.report import table


def test_a_file_has_exactly_the_size_asked_and_is_the_same_every_time(tmp_path):
    size = 300_000 + 17
    first = cached_gzip(seed=5, size=size, cache=tmp_path / "a")
    again = cached_gzip(seed=5, size=size, cache=tmp_path / "b")
    body = gzip.decompress(first.path.read_bytes())
    assert len(body) == size == first.size
    assert first.path.read_bytes() == again.path.read_bytes()
    assert body.count(b"\n") == first.transactions == again.transactions
    other = cached_gzip(seed=6, size=size, cache=tmp_path / "a")
    assert hashlib.sha256(other.path.read_bytes()).digest() != hashlib.sha256(
        first.path.read_bytes()).digest()


def test_every_line_is_json_that_prints_back_unchanged():
    lines = list(lines_of_size(seed=1, size=50_000))
    assert sum(map(len, lines)) == 50_000
    for line in lines:  # the service's parser keeps its fast path on these
        assert orjson.dumps(orjson.loads(line)) + b"\n" == line
        assert len(line) <= LONGEST_LINE or line is lines[-1]
    assert 120 < sum(map(len, lines[:-1])) / (len(lines) - 1) < 150


def test_small_files_have_the_count_asked():
    body = lines_of_count(seed=3, count=20)
    assert len({orjson.loads(line)["id"] for line in body.splitlines()}) == 20
    assert body.endswith(b"\n") and body.count(b"\n") == 20


def test_sizes_below_one_line_are_refused():
    with pytest.raises(ValueError):
        list(lines_of_size(seed=1, size=LONGEST_LINE - 1))


@pytest.mark.parametrize(("exposition", "expected"), [
    ("# TYPE txingest_event_loop_lag_seconds gauge\ntxingest_event_loop_lag_seconds 0.25\n",
     (0.25, True)),
    ('txingest_event_loop_lag_seconds_max{pod="a"} 1.5\ntxingest_event_loop_lag_seconds 0.2\n',
     (1.5, True)),
    ('txingest_event_loop_lag_seconds_bucket{le="0.1"} 5.0\n'
     'txingest_event_loop_lag_seconds_bucket{le="0.5"} 9.0\n'
     'txingest_event_loop_lag_seconds_bucket{le="+Inf"} 9.0\n'
     'txingest_event_loop_lag_seconds_count 9.0\n'
     'txingest_event_loop_lag_seconds_sum 1.2\n', (0.5, False)),
    ('txingest_event_loop_lag_seconds_bucket{le="0.025"} 3.0\n'
     'txingest_event_loop_lag_seconds_count 3.0\n'
     "txingest_event_loop_lag_max_seconds 0.0125\n", (0.0125, True)),
    ("txingest_records_total 5\n", None),
])
def test_loop_lag_is_read_from_a_gauge_or_bounded_from_a_histogram(exposition, expected):
    assert loop_lag(exposition) == expected


# A process of its own that holds 64 MiB, then frees it, one step per line read: the
# test process's own RSS depends on what earlier tests left in its allocator.
_HOLDER = """
import sys
print("ready", flush=True); sys.stdin.readline()
held = bytearray(64 << 20)
held[::4096] = b"x" * (len(held) // 4096)  # every page written: resident
print("held", flush=True); sys.stdin.readline()
del held
print("freed", flush=True); sys.stdin.readline()
"""


def test_the_sampler_keeps_the_largest_rss_and_the_high_water_mark():
    child = subprocess.Popen([sys.executable, "-c", _HOLDER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        sampler = MemorySampler(child.pid)
        for expected in ("ready", "held", "freed"):
            assert child.stdout.readline().strip() == expected
            sampler.sample()
            child.stdin.write("\n")
            child.stdin.flush()
    finally:
        child.kill()
        child.wait()
    assert len(sampler.curve) == 3
    assert sampler.max_rss_kb >= sampler.curve[0][1] + 60 * 1024
    assert sampler.hwm_kb >= sampler.max_rss_kb
    gone = MemorySampler(2**22 + 1)  # above pid_max's default: no such process
    gone.sample()
    assert gone.curve == [] and gone.max_rss_kb == 0


def test_a_gauge_is_read_by_its_exact_name():
    exposition = ("# HELP txingest_memory_reserved_peak_bytes Most memory ever counted\n"
                  "txingest_memory_reserved_peak_bytes_other 9e9\n"
                  "txingest_memory_reserved_peak_bytes 2.5e+08\n")
    assert gauge(exposition, "txingest_memory_reserved_peak_bytes") == 2.5e8
    assert gauge(exposition, "txingest_memory_reserved_bytes") is None


def test_the_table_shows_text_cells_as_they_are_and_missing_ones_as_a_dash():
    row = table([{"scenario": "big16", "peak_rss_mb": 3171.6, "output_records": 3950752,
                  "loop_lag_max_s": "n/a", "counted_peak_mb": "n/a", "exit_code": 0,
                  "ok": False}], header=False)
    assert row == "| big16 | 3,172 | - | 3,950,752 | - | - | n/a | n/a | 0 | NO |"
