"""CSV input files: app.files.parse_csv (quoting, BOM, line endings, exact numbers, each
malformed case naming its row), CSV_COLUMNS at start, and the preparer choosing CSV."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import tracemalloc

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.config import load_settings
from app.errors import ConfigError, PoisonError
from app.files.budget import MemoryBudget
from app.files.item import output_key
from app.files.parse_csv import csv_items, is_csv, parse_columns, parse_csv
from app.files.prepare import Preparer
from app.ops.stats import Stats
from tests.unit.fakes import FileDownloader, Sleeps, record, settings

LEDGER = "tx,account,amount:number,currency"


def values(body: bytes, columns: str = "", max_items: int = 1000) -> list[bytes]:
    items = parse_csv(body, columns=parse_columns(columns), max_items=max_items)
    return [item.value for item in items]


def poison(body: bytes, columns: str = LEDGER, max_items: int = 1000) -> PoisonError:
    with pytest.raises(PoisonError) as info:
        parse_csv(body, columns=parse_columns(columns), max_items=max_items)
    return info.value


# ---------------------------------------------------------------- well-formed files


def test_rfc4180_quoting_commas_doubled_quotes_and_line_breaks_inside_fields():
    body = (b'memo,n\r\n"a, b",1\r\n"say ""hi""",2\r\n"two\r\nlines",3\r\n"lf\nonly",4\r\n'
            b'"",5\r\n')
    assert [orjson.loads(v)["memo"] for v in values(body)] == [
        "a, b", 'say "hi"', "two\r\nlines", "lf\nonly", ""]


def test_a_bom_is_skipped_even_before_a_quoted_header():
    body = '\ufeff"tx",account\r\nt1,a\r\n'.encode()
    assert values(body) == [b'{"tx":"t1","account":"a"}']


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_crlf_and_lf_files_give_the_same_transactions(ending):
    lines = [b"tx,account,amount,currency", b"t1,acct-1,1.50,EUR", b"t2,acct-2,-0,USD"]
    body = ending.join(lines) + ending
    assert values(body, LEDGER) == [
        b'{"tx":"t1","account":"acct-1","amount":1.50,"currency":"EUR"}',
        b'{"tx":"t2","account":"acct-2","amount":-0,"currency":"USD"}']
    assert values(body.rstrip(b"\r\n"), LEDGER) == values(body, LEDGER), "no final newline"


@pytest.mark.parametrize("amount", [
    "1.50", "-0", "0", "123456789012345678901234567890", "0.100000000000000000000000000001",
    "547223282665458448182917485468.621017450744", "1e400", "-2.5E-3", "7e+2"])
def test_number_columns_keep_their_digits_as_written(amount):
    body = f"tx,account,amount,currency\nt,a,{amount},EUR\n".encode()
    (value,) = values(body, LEDGER)
    assert value == f'{{"tx":"t","account":"a","amount":{amount},"currency":"EUR"}}'.encode()


def test_a_number_key_field_keys_by_its_token():
    body = b"tx,amount\nt,1.50\n"
    (item,) = parse_csv(body, columns=parse_columns("tx,amount:number"), max_items=10,
                        key_field="amount")
    assert list(item.obj or ()) == ["amount"], "only the key field is kept"
    assert output_key(item, "amount", "u") == b"1.50"
    assert output_key(item, None, "u") == b"u"


def test_without_a_mapping_every_column_is_a_string_named_by_its_header():
    body = b"id,amount,memo\n1,1.50,\n"
    assert values(body) == [b'{"id":"1","amount":"1.50","memo":""}']


def test_a_mapping_renames_orders_and_leaves_out_columns():
    body = b"memo,amount,id,extra\n,7,x1,zzz\nhi,,x2,zzz\n"
    columns = "id=tx,amount=value:number?,memo=note?"
    assert values(body, columns) == [b'{"tx":"x1","value":7,"note":""}',
                                     b'{"tx":"x2","value":null,"note":"hi"}']


def test_empty_files_and_header_only_files_have_no_transactions():
    assert values(b"", LEDGER) == [] and values(b"\xef\xbb\xbf", LEDGER) == []
    assert values(b"tx,account,amount,currency\r\n", LEDGER) == []


def test_lines_can_be_streamed_in_as_any_iterable():
    lines = iter(["tx,account,amount,currency\r\n", 't,"a\r\n', 'b",3,EUR\r\n'])
    (item,) = csv_items(lines, columns=parse_columns(LEDGER), max_items=10)
    assert item.value == b'{"tx":"t","account":"a\\r\\nb","amount":3,"currency":"EUR"}'


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(TEXT, min_size=3, max_size=3), max_size=6))
def test_any_rows_a_csv_writer_writes_come_back_as_written(table):
    out = io.StringIO()
    # CRLF: Python 3.11's writer quotes a field for the terminator's characters only,
    # so under "\n" a field with a "\r" would go out unquoted (not RFC 4180).
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["a", "b", "c"])
    writer.writerows(table)
    got = [orjson.loads(v) for v in values(out.getvalue().encode())]
    assert got == [dict(zip("abc", row, strict=True)) for row in table]


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["", LEDGER, "tx=t?,amount:number?"]))
def test_any_bytes_give_transactions_or_a_classified_error(body, columns):
    try:
        items = parse_csv(body, columns=parse_columns(columns), max_items=5)
    except PoisonError as err:
        assert err.reason in {"invalid_csv", "missing_value", "invalid_number", "invalid_utf8",
                              "too_many_transactions"}
        return
    assert all(type(orjson.loads(item.value)) is dict for item in items)


# ---------------------------------------------------------------- malformed files

HEAD = b"tx,account,amount,currency\r\n"
GOOD = b"t,a,1,EUR\r\n"


@pytest.mark.parametrize("bad_row, reason, says", [
    (b"t,a,1\r\n", "invalid_csv", "3 fields where the header has 4"),
    (b"t,a,1,EUR,extra\r\n", "invalid_csv", "5 fields where the header has 4"),
    (b",a,1,EUR\r\n", "missing_value", "'tx' is empty"),
    (b"t,a,,EUR\r\n", "missing_value", "'amount' is empty"),
    (b'"t,a,1,EUR\r\n', "invalid_csv", "a quoted field is still open at the end of the file"),
    (b't,"a"b,1,EUR\r\n', "invalid_csv", "a closing quote must be followed by ','"),
    (b"t,a\rb,1,EUR\r\n", "invalid_csv", "a carriage return inside an unquoted field"),
])
def test_a_malformed_row_names_its_data_row_and_line(bad_row, reason, says):
    # Data row 3 starts on line 6: a blank line and a two-line field come before it.
    body = HEAD + GOOD + b"\r\n" + b't,"two\r\nlines",1,EUR\r\n' + bad_row + GOOD
    err = poison(body)
    assert err.reason == reason
    assert err.message.startswith(f"row 3 (line 6): {says}"), err.message


@pytest.mark.parametrize("amount", [
    "1,5", "+1", " 1", "1 ", "1.", ".5", "01", "NaN", "Infinity", "0x10", "1e", "١٢", "€1"])
def test_a_bad_amount_is_poison_naming_the_row(amount):
    body = HEAD + GOOD + f't,a,"{amount}",EUR\r\n'.encode()
    err = poison(body)
    assert err.reason == "invalid_number"
    assert err.message.startswith("row 2 (line 3): 'amount' is "), err.message


def test_invalid_utf8_names_the_line_and_the_byte():
    err = poison(HEAD + GOOD + b"t,\xff,1,EUR\r\n")
    assert err.reason == "invalid_utf8"
    assert err.message == f"line 3: invalid UTF-8 at byte {len(HEAD + GOOD) + 2} of the file"


@pytest.mark.parametrize("header, columns, says", [
    (b"tx,account,currency\r\n", LEDGER, "header: no column 'amount'"),
    (b"tx,account,amount,amount,currency\r\n", LEDGER, "header: 2 columns named 'amount'"),
    (b"tx,,amount\r\n", "", "header: column 2 has no name"),
    (b"tx,amount,tx\r\n", "", "header: 2 columns named 'tx'"),
])
def test_a_header_that_does_not_fit_is_poison(header, columns, says):
    err = poison(header + GOOD, columns)
    assert (err.reason, err.message) == ("invalid_csv", says)


def test_more_rows_than_max_transactions_is_poison():
    assert len(values(HEAD + GOOD * 3, LEDGER, max_items=3)) == 3
    assert poison(HEAD + GOOD * 4, max_items=3).reason == "too_many_transactions"


# ---------------------------------------------------------------- CSV_COLUMNS at start


def test_columns_setting_parses_names_fields_types_and_optional():
    (a, b, c) = parse_columns(" id=tx , amount:number ,memo? ")
    assert (a.name, a.field, a.number, a.optional) == ("id", "tx", False, False)
    assert (b.name, b.field, b.number, b.optional) == ("amount", "amount", True, False)
    assert (c.name, c.field, c.number, c.optional) == ("memo", "memo", False, True)
    assert parse_columns("") is None and parse_columns("  ") is None


@pytest.mark.parametrize("value, fragment", [
    ("amount:float", "entry 'amount:float': type must be string or number"),
    ("id,,amount", "entry '': must be column[=field][:type][?] with names"),
    ("id=", "entry 'id=': must be"),
    ("=tx", "entry '=tx': must be"),
    ("id=tx,ref=tx", "field 'tx' appears twice"),
    ("id,id=other", "column 'id' appears twice"),
])
def test_a_bad_mapping_stops_the_service_naming_the_setting(value, fragment):
    with pytest.raises(ConfigError) as err:
        load_settings([], {"CSV_COLUMNS": value})
    assert str(err.value).startswith(f"invalid setting CSV_COLUMNS={value!r}: ")
    assert fragment in str(err.value)


def test_a_mapping_without_the_output_key_field_stops_the_service():
    with pytest.raises(ConfigError, match="CSV_COLUMNS: has no field 'account'"):
        load_settings([], {"CSV_COLUMNS": "id=tx,amount", "OUTPUT_KEY_FIELD": "account"})
    ok = load_settings([], {"CSV_COLUMNS": "acct=account", "OUTPUT_KEY_FIELD": "account"})
    assert ok.csv_columns is not None and ok.csv_columns[0].field == "account"


def test_a_bad_mapping_exits_2_with_one_line():
    result = subprocess.run([sys.executable, "-m", "app"], capture_output=True, text=True,
                            env={"CSV_COLUMNS": "amount:money", "PATH": ""}, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "txingest: invalid setting CSV_COLUMNS='amount:money': "
        "entry 'amount:money': type must be string or number"]


# ---------------------------------------------------------------- the format is chosen


@pytest.mark.parametrize("content_type, paths, expected", [
    ("text/csv", ["/x"], True),
    ("Text/CSV; charset=utf-8", ["/x.json"], True),
    (None, ["/daily/ledger.csv"], True),
    ("application/gzip", ["/daily/ledger.CSV.GZ"], True),
    ("application/octet-stream", ["/short", "/real/ledger.csv"], True),
    ("application/json", ["/ledger.ndjson"], False),
    (None, ["/ledger.csv.bak", "/csv"], False),
    ("text/csvx", ["/x"], False),
])
def test_csv_is_chosen_by_content_type_or_path(content_type, paths, expected):
    assert is_csv(content_type, *paths) is expected


URL = "http://files/ledger"


def preparer(downloader: FileDownloader, *flags: str, budget: int = 1 << 30) -> Preparer:
    return Preparer(settings(*flags), downloader, MemoryBudget(budget),  # type: ignore[arg-type]
                    Stats(), sleep=Sleeps())


async def test_the_preparer_parses_a_text_csv_response_as_csv():
    downloader = FileDownloader({URL: HEAD + GOOD, URL + ".csv": HEAD + GOOD})
    downloader.content_types[URL] = "text/csv; charset=utf-8"
    for url in (URL, URL + ".csv"):
        prepared = await preparer(downloader, "--csv-columns", LEDGER).prepare(record(0, url))
        assert [r.value for r in prepared.each_record()] == [
            b'{"tx":"t","account":"a","amount":1,"currency":"EUR"}'], url


async def test_a_json_file_is_not_read_as_csv():
    downloader = FileDownloader({URL + ".json": b'{"tx":"t"}\n'})
    prepared = await preparer(downloader, "--csv-columns", LEDGER).prepare(
        record(0, URL + ".json"))
    assert [r.value for r in prepared.each_record()] == [b'{"tx":"t"}']


async def test_a_malformed_csv_file_is_dead_lettered_naming_its_row():
    downloader = FileDownloader({URL + ".csv": HEAD + GOOD + b"t,a,1.5.0,EUR\r\n"})
    prepared = await preparer(downloader, "--csv-columns", LEDGER).prepare(
        record(0, URL + ".csv"))
    assert prepared.dead_lettered and prepared.reason == "invalid_number"
    letter = orjson.loads(prepared.records[0].value)
    assert letter["error"] == "row 2 (line 3): 'amount' is '1.5.0', not a number"


def _wide(names: list[str], rows: int) -> bytes:
    lines = [",".join(names)] + [",".join(str(r % 10) for _ in names) for r in range(rows)]
    return ("\r\n".join(lines) + "\r\n").encode()


@pytest.mark.parametrize("names, key", [
    (["n"], None),                                      # narrow rows: counted per row
    ([f"column_name_number_{i:02d}" for i in range(40)], "column_name_number_00"),  # keys
])
async def test_the_budget_counts_at_least_what_parsing_a_csv_file_holds(names, key):
    body = _wide(names, 3000)
    downloader = FileDownloader({URL + ".csv": body})
    flags = ["--output-key-field", key] if key else []
    ready, reservation = preparer(downloader, *flags), MemoryBudget(1 << 30).reservation()
    counted: list[int] = []
    download = downloader.download

    async def counting(url, count=None, on_response=None):  # noqa: ANN001, ANN202
        body = await download(url, count, on_response)
        counted.append(reservation.held)  # what the body and its parsing were given
        return body

    downloader.download = counting  # type: ignore[method-assign]
    prepared = await ready.prepare(record(0, URL + ".csv"), reservation)
    assert prepared.count == 3000
    tracemalloc.start()
    try:
        held = bytes(body)  # the body is held while it is parsed
        parse_csv(held, columns=None, max_items=10**6, key_field=key)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert counted[0] >= peak, (counted, peak)
