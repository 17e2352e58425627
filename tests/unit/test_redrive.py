"""Re-drive's pure parts: arguments, the selection and parking rules, the reports, the bar."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys

import pytest

from app.__main__ import main as app_main
from app.redrive import command as redrive
from app.redrive.command import parse_args
from app.redrive.job import Options, Selection, Tally, UsageError, Verdict, judge
from app.redrive.progress import Progress, render
from app.redrive.record import DeadLetter

T = 1_764_410_400_000  # 2025-11-29T10:00:00Z


def letter(reason: str = "http_error", *, partition: int = 0, offset: int = 5,
           timestamp_ms: int = T, redrives: int = 0, rebuildable: bool = True) -> DeadLetter:
    return DeadLetter(partition=partition, offset=offset, timestamp_ms=timestamp_ms,
                      key=b"k", reason=reason, url="http://user:pw@files.example/a?sig=s",
                      rebuildable=rebuildable, value=b"v" if rebuildable else None,
                      redrives=redrives, source_topic="in", source_partition=0)


# -- arguments --------------------------------------------------------------------------

def test_reasons_and_partitions_repeat_or_take_commas_and_the_rest_is_left_over() -> None:
    options, rest = parse_args(["--reason", "http_error,invalid_json", "--reason", "bad_gzip",
                                "--partition", "0,2", "--dlq-topic", "d", "--dry-run"])
    assert options.selection.reasons == {"http_error", "invalid_json", "bad_gzip"}
    assert options.selection.partitions == {0, 2}
    assert options.dry_run and options.max_redrives == 3
    assert rest == ["--dlq-topic", "d"]


def test_times_are_iso_8601_and_utc_without_a_zone() -> None:
    options, _ = parse_args(["--since", "2025-11-29T10:00:00Z", "--until", "2025-11-29T11:00"])
    assert options.selection.since_ms == T
    assert options.selection.until_ms == T + 3_600_000
    offset, _ = parse_args(["--since", "2025-11-29T12:00:00+02:00"])
    assert offset.selection.since_ms == T


@pytest.mark.parametrize("argv, says", [
    (["--since", "yesterday"], "not an ISO 8601 time"),
    (["--since", "2025-11-29T11:00Z", "--until", "2025-11-29T10:00Z"], "earlier than --until"),
    (["--since", "2025-11-29T10:00Z", "--until", "2025-11-29T10:00Z"], "earlier than --until"),
    (["--from-offset", "3"], "exactly one --partition"),
    (["--partition", "0,1", "--to-offset", "3"], "exactly one --partition"),
    (["--partition", "0", "--from-offset", "9", "--to-offset", "3"], "must not be after"),
    (["--partition", "x"], "--partition 'x'"),
    (["--partition", "-1"], "--partition '-1'"),
    (["--max-redrives", "0"], "--max-redrives '0'"),
    (["--batch", "0"], "--batch '0'"),
    (["--job", "has space"], "--job"),
    (["--reason"], "expected one argument"),
])
def test_bad_arguments_raise_one_clear_usage_error(argv: list[str], says: str) -> None:
    with pytest.raises(UsageError, match=says.replace("(", r"\(")):
        parse_args(argv)


def test_bad_arguments_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert app_main(["redrive", "--max-redrives", "-1"]) == 2
    assert app_main(["redrive", "--no-such-flag"]) == 2  # left to the settings: unknown
    assert app_main(["redrive", "--dlq-topic", "same", "--input-topic", "same"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("txingest redrive: ") for line in err)


def test_the_job_is_the_selection_whatever_the_order_or_the_other_options() -> None:
    a, _ = parse_args(["--reason", "b,a", "--partition", "1", "--partition", "0"])
    b, _ = parse_args(["--reason", "a", "--reason", "b", "--partition", "0,1",
                       "--max-redrives", "7", "--batch", "9", "--dry-run"])
    c, _ = parse_args(["--reason", "a"])
    named, _ = parse_args(["--reason", "a", "--job", "incident-42"])
    assert a.job == b.job != c.job
    assert named.job == "incident-42"


def test_the_job_name_is_the_same_in_another_process() -> None:
    """A rerun is a new process, with other string hashes: it must find the same job."""
    argv = ["--reason", "a,b,c,d,e,f,g,h", "--partition", "3,1,2"]
    code = f"from app.redrive.command import parse_args; print(parse_args({argv!r})[0].job)"
    jobs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2", "3")}
    assert jobs == {parse_args(argv)[0].job + "\n"}


def test_a_job_has_its_own_group_and_transactional_id() -> None:
    from app.config import load_settings
    settings = load_settings(["--group-id", "g", "--transactional-id-prefix", "p"], {})
    options = Options(Selection(), job="j")
    assert options.group_id(settings) == "g-redrive-j"
    assert options.transactional_id(settings) == "p-redrive-j"


# -- selection and parking ----------------------------------------------------------------

@pytest.mark.parametrize("selection, chosen", [
    (Selection(), True),
    (Selection(reasons=frozenset({"http_error"})), True),
    (Selection(reasons=frozenset({"invalid_json"})), False),
    (Selection(since_ms=T), True),            # since: inclusive
    (Selection(since_ms=T + 1), False),
    (Selection(until_ms=T + 1), True),
    (Selection(until_ms=T), False),           # until: exclusive
    (Selection(partitions=frozenset({0})), True),
    (Selection(partitions=frozenset({1})), False),
    (Selection(from_offset=5, to_offset=5), True),  # both inclusive
    (Selection(from_offset=6), False),
    (Selection(to_offset=4), False),
])
def test_each_filter_and_its_bounds(selection: Selection, chosen: bool) -> None:
    expected = Verdict.MOVE if chosen else Verdict.SKIP
    assert judge(letter(), selection, max_redrives=3) is expected


def test_a_letter_re_driven_max_times_is_parked() -> None:
    assert judge(letter(redrives=2), Selection(), max_redrives=3) is Verdict.MOVE
    assert judge(letter(redrives=3), Selection(), max_redrives=3) is Verdict.PARK
    assert judge(letter(redrives=9), Selection(), max_redrives=3) is Verdict.PARK


def test_a_letter_without_the_input_or_url_cannot_be_re_driven_unless_filtered_out() -> None:
    broken = letter(rebuildable=False, redrives=5)
    assert judge(broken, Selection(), max_redrives=3) is Verdict.UNRECOVERABLE
    assert judge(broken, Selection(reasons=frozenset({"x"})), max_redrives=3) is Verdict.SKIP


# -- reports ------------------------------------------------------------------------------

def tally_of(*letters: tuple[DeadLetter, Verdict]) -> Tally:
    tally = Tally()
    for one, verdict in letters:
        tally.count(one, verdict)
    return tally


def test_the_dry_run_counts_what_would_move_by_reason() -> None:
    tally = tally_of((letter("http_error"), Verdict.MOVE), (letter("http_error"), Verdict.MOVE),
                     (letter("bad_gzip"), Verdict.MOVE), (letter(), Verdict.SKIP))
    options = Options(Selection(), job="j", dry_run=True)
    assert redrive.report(tally, options, "dlq") == [
        "redrive job j (dry run): would move 3 (bad_gzip 1, http_error 2); parked 0; "
        "cannot re-drive 0; not selected 1; 4 dead letters read"]


def test_the_report_lists_parked_letters_without_secrets_then_one_summary_line() -> None:
    parked = letter(offset=17, redrives=3)
    tally = tally_of((letter(), Verdict.MOVE), (letter(), Verdict.MOVE), (parked, Verdict.PARK))
    tally.confirm([letter()])
    lines = redrive.report(tally, Options(Selection(), job="j"), "dlq")
    assert lines[0].startswith("parked (input re-driven 3+ times already, not sent): 1")
    assert lines[1] == "  dlq:0:17  http_error  redrives=3  url=http://files.example/a"
    assert lines[-1] == ("redrive job j: moved 1 (http_error 1) of 2 selected; parked 1; "
                         "cannot re-drive 0; not selected 0; 3 dead letters read")


# -- progress -----------------------------------------------------------------------------

def test_the_bar_shows_read_share_moved_of_selected_and_rate() -> None:
    line = render(read=250, total=1000, moved=40, selected=50, elapsed=2.0)
    assert line == ("[######------------------]  25% 250/1000 read | "
                    "moved 40/50 selected | 20/s")
    assert render(0, 0, 0, 0, 0.0).startswith("[" + "#" * 24 + "] 100%")


def test_the_bar_is_drawn_in_place_only_when_enabled() -> None:
    stream = io.StringIO()
    with Progress.to(stream, 10, enabled=False) as bar:
        assert bar is None
    assert stream.getvalue() == ""
    now = [0.0]
    bar = Progress(stream, 10, clock=lambda: now[0])
    bar.update(1, 0, 0)
    bar.update(2, 0, 0)  # within the redraw interval: not drawn
    now[0] = 1.0
    bar.update(5, 4, 4)
    bar.finish()
    drawn = stream.getvalue()
    assert drawn.count("\r") == 3 and drawn.endswith("\n")
    assert "2/10" not in drawn and "5/10 read | moved 4/4 selected | 4/s" in drawn


def test_the_redrive_loop_hands_the_kafka_clients_leftovers_to_the_service_handler(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Its producer dies as the service's can (a lost coordinator connection): what the
    client leaves behind must not print asyncio tracebacks over the job's report."""
    from app.kafka.clients import FatalStartupError
    from app.ops import log
    from app.redrive import mover as redrive_mover
    handlers = []

    async def unreachable(settings: object) -> None:
        handlers.append(asyncio.get_running_loop().get_exception_handler())
        raise FatalStartupError("no broker")

    monkeypatch.setattr(redrive_mover, "check_connection", unreachable)
    assert redrive.main(["--reason", "http_error"]) == 1
    assert handlers == [log.loop_exceptions]
    assert "no broker" in capsys.readouterr().err
