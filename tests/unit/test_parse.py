"""Tests for app.files.parse (and its exact_json and item): input URLs, file parsing
(exactness, poison reasons), output keys."""

from __future__ import annotations

import json
import tracemalloc

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import PoisonError
from app.files import input_url, parse
from app.files.input_url import parse_input_url
from app.files.item import Item, output_key
from app.files.parse import parse_transactions


def values(body: bytes, max_items: int = 1000, max_depth: int = 64) -> list[bytes]:
    items = parse_transactions(body, max_items=max_items, max_depth=max_depth)
    return [item.value for item in items]


def poison(body: bytes, max_items: int = 1000, max_depth: int = 64) -> PoisonError:
    with pytest.raises(PoisonError) as info:
        parse_transactions(body, max_items=max_items, max_depth=max_depth)
    return info.value


def nested(depth: int) -> bytes:
    """An object whose nesting depth is exactly ``depth`` (a flat object is 1)."""
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


# ---------------------------------------------------------------- input records


@pytest.mark.parametrize(
    "record",
    [
        b"https://files.example.com/a.json",
        b"  https://files.example.com/a.json\r\n",
        b'"https://files.example.com/a.json"',
        b' "https://files.example.com/a.json" ',
        b'{"url": "https://files.example.com/a.json"}',
        b'{"id": 7, "url": "https://files.example.com/a.json", "extra": [1]}',
    ],
)
def test_input_url_forms(record: bytes) -> None:
    assert parse_input_url(record) == "https://files.example.com/a.json"


def test_input_url_keeps_http_query_and_port() -> None:
    assert parse_input_url(b"http://h:8080/p?q=1&r=%20") == "http://h:8080/p?q=1&r=%20"
    assert parse_input_url(b"HTTPS://H/x") == "HTTPS://H/x"


@pytest.mark.parametrize(
    "record",
    [
        None,
        b"",
        b" \n\t ",
        b"\xff\xfehttps://x/a",
        b"123",
        b"null",
        b"true",
        b'["https://x/a"]',
        b'{"u": "https://x/a"}',
        b'{"url": 5}',
        b'{"url": null}',
        b'{"url": "https://x/a"',
        b'"https://x/a',
        b"ftp://x/a.json",
        b'"file:///etc/passwd"',
        b"x/a.json",
        b"//x/a.json",
        b"https:///a.json",
        b"http://",
        b"https://x/a b.json",
        b"https://x/a\tb.json",
        b'"https://x/a\\u0000b"',
        b'"https://x/a\\u00a0b"',
        b'" https://x/a"',
        b"https://x/a\x7fb",
        b"https://x:99999/a",
        b"https://x:port/a",
        b"https://[::1/a",
    ],
)
def test_input_url_invalid(record: bytes | None) -> None:
    with pytest.raises(PoisonError) as info:
        parse_input_url(record)
    assert info.value.reason == "invalid_input_record"
    assert info.value.message


def test_input_url_messages_are_specific() -> None:
    with pytest.raises(PoisonError, match="scheme 'ftp'"):
        parse_input_url(b"ftp://x/a")
    with pytest.raises(PoisonError, match="JSON array"):
        parse_input_url(b"[1]")
    with pytest.raises(PoisonError, match="position 11"):
        parse_input_url(b"https://x/a b")


def test_only_json_start_characters_reach_the_json_parser() -> None:
    """A value whose first character is not in _JSON_START is taken as a plain URL
    without trying JSON: that is only right if no JSON document can start with it."""
    tails = ["", "rue", "alse", "ull", "1", "0.5", '"', "]", "}", "aN", "nfinity", "x"]
    for code in [*range(0x21, 0x250), 0x2028, 0xFEFF, 0x1F600]:
        char = chr(code)
        parsed = [tail for tail in tails if _loads_ok(char + tail)]
        if char not in input_url._JSON_START:
            assert not parsed, f"{char!r}{parsed[0]!r} is JSON but would be taken as a URL"


def _loads_ok(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


# ---------------------------------------------------------------- formats


def test_ndjson_blank_lines_and_crlf() -> None:
    body = b'\r\n{"a":1}\r\n\r\n  \t\r\n{"b": "x"}\r\n{"c":[1, 2]}'
    assert values(body) == [b'{"a":1}', b'{"b":"x"}', b'{"c":[1,2]}']


def test_array_compact_and_pretty() -> None:
    items = [{"id": "t1", "amount": 12.5}, {"id": "t2", "tags": ["x", {"y": None}]}]
    expected = [b'{"id":"t1","amount":12.5}', b'{"id":"t2","tags":["x",{"y":null}]}']
    assert values(json.dumps(items, separators=(",", ":")).encode()) == expected
    assert values(json.dumps(items).encode()) == expected
    assert values(b"\n\n" + json.dumps(items, indent=4).encode() + b"\r\n") == expected


def test_bom_is_skipped() -> None:
    assert values(b'\xef\xbb\xbf{"a":1}\n{"b":2}\n') == [b'{"a":1}', b'{"b":2}']
    assert values(b'\xef\xbb\xbf[{"a":1}]') == [b'{"a":1}']
    assert values(b"\xef\xbb\xbf") == []


@pytest.mark.parametrize("body", [b"", b" \n\t\r\n ", b"[]", b" [ \n ] \n", b"\n\n"])
def test_empty_files(body: bytes) -> None:
    assert parse_transactions(body, max_items=10) == []


def test_items_carry_parsed_objects() -> None:
    [item] = parse_transactions(b'{"id": "t1", "n": {"k": [true, null]}}', max_items=1)
    assert item.obj["id"] == "t1"
    assert item.obj["n"] == {"k": [True, None]}
    with pytest.raises(AttributeError):
        item.value = b"{}"  # type: ignore[misc]


# ---------------------------------------------------------------- poison


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"a":1}\n{"a":"\xff"}\n', "invalid_utf8"),
        (b'[{"a":"\xc3"}]', "invalid_utf8"),
        (b'{"a":"\xed\xa0\x80"}', "invalid_utf8"),  # a UTF-8-encoded surrogate
        (b'{"a":1,}', "invalid_json"),
        (b'{"a":1}\n{"b":', "invalid_json"),
        (b'{"a":1} {"b":2}', "invalid_json"),
        (b"{'a':1}", "invalid_json"),
        (b'{"a":01}', "invalid_json"),
        (b'{"a":"x\ty"}', "invalid_json"),  # raw control character in a string
        (b'{"a":"\\ud800"}', "invalid_json"),  # unpaired surrogate escape
        (b'{"a":1}\x0c', "invalid_json"),  # form feed is not JSON whitespace
        (b'[{"a":1},]', "invalid_json"),
        (b'[{"a":1}', "invalid_json"),
        (b'[{"a":1}] x', "invalid_json"),
        (b'[{"a":1}]\n[{"b":2}]', "invalid_json"),
        (b'{"a":NaN}', "invalid_json"),
        (b'{"a":Infinity}', "invalid_json"),
        (b'[{"a":-Infinity}]', "invalid_json"),
        (b"\x00", "invalid_json"),
        ('{"a":\u0661}'.encode(), "invalid_json"),  # a non-ASCII digit is not a number
        (b"[1]", "not_an_object"),
        (b'[{"a":1},"x"]', "not_an_object"),
        (b"[[{}]]", "not_an_object"),
        (b'{"a":1}\n[{"a":1}]\n', "not_an_object"),
        (b'"text"\n', "not_an_object"),
        (b"null", "not_an_object"),
        (b"123456789012345678901234567890", "not_an_object"),
    ],
)
def test_poison_reasons(body: bytes, reason: str) -> None:
    assert poison(body).reason == reason
    assert poison(body, max_items=10**6).reason == reason


def test_poison_messages_locate_the_problem() -> None:
    err = poison(b'{"a":1}\n\n{"b":2}\n[3]\n')
    assert err.message == "line 4: expected a JSON object, got array"
    err = poison(b'[{"a":1}, {"b":2}, 7]')
    assert err.message == "item 3 of the array: expected a JSON object, got number"
    assert "line 2" in poison(b'{"a":1}\n{"a":}\n').message
    assert "NaN" in poison(b'{"a":1}\n{"a":NaN}\n').message
    assert "byte 7" in poison(b'[{"a":"\xff"}]').message
    assert "byte 10" in poison(b'\xef\xbb\xbf[{"a":"\xff"}]').message  # offsets count the BOM


def test_bad_line_after_good_lines_poisons_whole_file() -> None:
    good = b'{"id":"t"}\n' * 50
    assert poison(good + b"oops\n" + good).reason == "invalid_json"


# ---------------------------------------------------------------- exactness


EXACT_TOKENS = [
    "123456789012345678901234567890",
    "-123456789012345678901234567890",
    "0.100000000000000000000000000001",
    "1.50",
    "1e5",
    "1E+5",
    "-2.5e-10",
    "-0",
    "-0.0",
    "0",
    "18446744073709551616",
    "-9223372036854775809",
    "1e400",
    "12.34",
]


@pytest.mark.parametrize("token", EXACT_TOKENS)
@pytest.mark.parametrize("layout", ["{{\"amount\":{}}}", "{{ \"amount\" : {} }}"])
def test_numbers_keep_their_exact_digits(token: str, layout: str) -> None:
    item = layout.format(token).encode()
    expected = b'{"amount":' + token.encode() + b"}"
    assert values(item + b"\n") == [expected]
    assert values(b"[" + item + b"]") == [expected]
    assert values(b"[\n  " + item + b",\n  " + item + b"\n]") == [expected, expected]


def test_brief_examples_byte_for_byte() -> None:
    body = b'{"a": 1.50, "b": 1e5, "c": -0}\n{"a":1.50,"b":1e5,"c":-0}\n'
    assert values(body) == [b'{"a":1.50,"b":1e5,"c":-0}'] * 2
    assert values(b'[{"amount": 123456789012345678901234567890}]') == [
        b'{"amount":123456789012345678901234567890}'
    ]


def test_nested_numbers_are_exact() -> None:
    body = b'{"legs":[{"amt":1.10},{"amt":-0}],"m":{"x":[1e5,2.50]}}'
    assert values(body) == [body]
    assert values(b"[" + body + b"]") == [body]


def test_key_order_kept() -> None:
    body = b'{"z":1,"a":{"y":2,"b":3},"m":"x"}'
    assert values(body) == [body]
    [item] = parse_transactions(b"[" + body + b"]", max_items=1)
    assert list(item.obj) == ["z", "a", "m"]
    assert list(item.obj["a"]) == ["y", "b"]


def test_unicode_strings_round_trip() -> None:
    original = {"name": "Müller 東京 😀", "esc": "q\"b\\s/\n\t\u0001", "sep": "\u2028"}
    for text in (json.dumps(original), json.dumps(original, ensure_ascii=False)):
        [value] = values(text.encode())
        assert json.loads(value) == original
        [value] = values(b"[" + text.encode() + b"]")
        assert json.loads(value) == original
    assert values('{"n":"é"}'.encode()) == ['{"n":"é"}'.encode()]
    assert values(b'{"n":"\\u00e9"}') == ['{"n":"é"}'.encode()]


def test_fast_and_exact_paths_agree() -> None:
    body = b'{"a":1,"b":"x"}\n{"a": 1.50}\n{"a":1.5}\n{"a":"\\u00e9"}\n{"a":1,"a":2}\n'
    fast = [i.value for i in parse._parse(body, 100, 64, fast=True)]
    exact = [i.value for i in parse._parse(body, 100, 64, fast=False)]
    assert fast == exact == [b'{"a":1,"b":"x"}', b'{"a":1.50}', b'{"a":1.5}',
                             '{"a":"é"}'.encode(), b'{"a":2}']


def test_fast_path_is_given_up_when_lines_never_match(monkeypatch: pytest.MonkeyPatch) -> None:
    lines, chunks = [], []
    real_line, real_chunk = parse._fast_line, parse._fast_chunk

    def counting_line(line: bytes, max_depth: int, keep: bool) -> Item | None:
        lines.append(line)
        return real_line(line, max_depth, keep)

    def counting_chunk(chunk: list[bytes], max_depth: int, keep: bool) -> list[Item] | None:
        chunks.append(chunk)
        return real_chunk(chunk, max_depth, keep)

    monkeypatch.setattr(parse, "_fast_line", counting_line)
    monkeypatch.setattr(parse, "_fast_chunk", counting_chunk)
    many = 3 * parse._CHUNK_LINES
    assert len(values(b'{"a": 1}\n' * many, max_items=many)) == many
    assert (len(chunks), len(lines)) == (1, 9)  # one chunk, the allowance, then never again
    chunks.clear(), lines.clear()
    assert len(values(b'{"a":1}\n' * many, max_items=many)) == many
    assert (len(chunks), len(lines)) == (3, 0)  # whole chunks, no line on its own


def _ndjson(count: int, odd: dict[int, bytes] | None = None) -> bytes:
    lines = [b'{"i":%d,"v":"x"}' % i for i in range(count)]
    for n, line in (odd or {}).items():
        lines[n] = line
    return b"\n".join(lines) + b"\n"


def test_chunks_and_lines_agree_on_a_file_with_odd_lines_across_chunks() -> None:
    size = parse._CHUNK_LINES
    body = _ndjson(3 * size + 5, {3: b'{"a": 1.50}', size - 1: b"", size: b'  {"i":1}\r',
                                  2 * size + 7: b'{"a":"\\u00e9"}', 3 * size: b'{"a":1,"a":2}'})
    fast = [i.value for i in parse._parse(body, 10**6, 64, fast=True)]
    exact = [i.value for i in parse._parse(body, 10**6, 64, fast=False)]
    assert fast == exact and len(fast) == 3 * size + 4
    assert fast[3] == b'{"a":1.50}' and fast[size - 1] == b'{"i":1}'


def test_lines_that_are_only_json_together_are_still_poison() -> None:
    # Joined into one array these two lines would read as two objects.
    body = _ndjson(10, {4: b'{"a":1},{"b":"', 5: b'"}'})
    err = poison(body)
    assert err.reason == "invalid_json" and "line 5" in err.message


def test_errors_past_the_first_chunk_name_their_line() -> None:
    size = parse._CHUNK_LINES
    many = 2 * size
    err = poison(_ndjson(many, {size + 10: b'{"a":'}), max_items=many)
    assert f"line {size + 11}" in err.message
    deep = b'{"a":' * 65 + b"1" + b"}" * 65
    err = poison(_ndjson(many, {size + 20: deep}), max_items=many)
    assert err.reason == "nesting_too_deep" and f"line {size + 21}" in err.message
    wide = b'{"a":[' + b",".join([b"[]"] * 80) + b"]}"  # 81 brackets, depth 3
    assert values(_ndjson(many, {5: wide}), max_items=many)[5] == wide


def test_max_items_counts_across_chunks() -> None:
    count = parse._CHUNK_LINES + 3
    assert len(values(_ndjson(count), max_items=count)) == count
    assert poison(_ndjson(count), max_items=count - 1).reason == "too_many_transactions"


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize("layout", ["ndjson", "array"])
def test_max_items_boundary(layout: str) -> None:
    def body(n: int) -> bytes:
        lines = [b'{"i":%d}' % i for i in range(n)]
        return b"\n".join(lines) if layout == "ndjson" else b"[" + b",".join(lines) + b"]"

    assert len(values(body(5), max_items=5)) == 5
    err = poison(body(6), max_items=5)
    assert err.reason == "too_many_transactions"
    assert "5" in err.message
    assert values(body(0), max_items=0) == []
    assert poison(body(1), max_items=0).reason == "too_many_transactions"


@pytest.mark.parametrize("max_depth", [1, 5, 64])
def test_depth_boundary(max_depth: int) -> None:
    ok = nested(max_depth)
    assert values(ok, max_depth=max_depth) == [ok]
    assert values(b"[" + ok + b"]", max_depth=max_depth) == [ok]
    deep = nested(max_depth + 1)
    assert poison(deep, max_depth=max_depth).reason == "nesting_too_deep"
    assert poison(b"[" + deep + b"]", max_depth=max_depth).reason == "nesting_too_deep"


def test_depth_counts_arrays() -> None:
    assert values(b'{"a":[[1]]}', max_depth=3) == [b'{"a":[[1]]}']
    assert poison(b'{"a":[[[1]]]}', max_depth=3).reason == "nesting_too_deep"
    # Brackets inside strings are not nesting.
    assert values(b'{"a":"[[[[{{{{"}', max_depth=1) == [b'{"a":"[[[[{{{{"}']


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'[{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}]",
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"ok":1}\n' + b'{"a":' * 100_000,
    ],
)
def test_extreme_nesting(body: bytes) -> None:
    assert poison(body).reason == "nesting_too_deep"


def test_depth_beyond_orjson_limit_is_nesting() -> None:
    assert poison(nested(300), max_depth=1000).reason == "nesting_too_deep"


# ---------------------------------------------------------------- output keys


def test_output_key() -> None:
    url = "https://x/ä.json"
    body = (b'{"id":"t-\xc3\xa4","n":123456789012345678901234567890,"f":1.50,'
            b'"o":{"b":1,"a":[true,null]},"z":null,"t":false}')
    for spaced in (False, True):  # exact-path items (Fragments) and fast-path items alike
        [item] = parse_transactions(body.replace(b",", b", ") if spaced else body, max_items=1)
        assert output_key(item, None, url) == url.encode()
        assert output_key(item, "id", url) == "t-ä".encode()
        assert output_key(item, "n", url) == b"123456789012345678901234567890"
        assert output_key(item, "f", url) == b"1.50"
        assert output_key(item, "o", url) == b'{"b":1,"a":[true,null]}'
        assert output_key(item, "z", url) == b"null"
        assert output_key(item, "t", url) == b"false"
    [item] = parse_transactions(b'{"id":7}', max_items=1)
    assert output_key(item, "id", url) == b"7"


def test_output_key_missing_field() -> None:
    item = Item(b'{"a":1}', {"a": 1})
    with pytest.raises(PoisonError) as info:
        output_key(item, "x", "https://x/a")
    assert info.value.reason == "missing_key_field"
    assert info.value.message == "item has no field 'x'"


# ---------------------------------------------------------------- properties

JSONISH = st.text(alphabet='{}[]",:0123456789.eE+-tfnrulsaNIy \n\r\t\\/\x00\ufeff\u00e9')
TOKENS = st.lists(
    st.sampled_from(['{', '}', '[', ']', ',', ':', '"k"', '"\\ud800"', "1", "-0", "1.50",
                     "1e999", "NaN", "true", "null", " ", "\n", "\r\n", '{"a":1}'])
).map("".join)


def outcome(body: bytes, fast: bool) -> list[bytes] | str:
    try:
        items = parse._parse(body, 50, 8, fast=fast)
    except PoisonError as e:
        return e.reason
    assert all(isinstance(i, Item) and isinstance(i.obj, dict) for i in items)
    return [i.value for i in items]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), JSONISH.map(str.encode), TOKENS.map(str.encode)))
def test_any_bytes_give_items_or_poison(body: bytes) -> None:
    # Anything but a PoisonError escaping fails the test; both paths must agree.
    assert outcome(body, fast=True) == outcome(body, fast=False)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.text()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=6,
)
ITEMS = st.lists(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=5), max_size=4)


@settings(max_examples=120, deadline=None)
@given(ITEMS, st.booleans(), st.booleans())
def test_round_trip(items: list[dict], compact: bool, ascii_only: bool) -> None:
    seps = (",", ":") if compact else (", ", ": ")
    lines = [json.dumps(i, separators=seps, ensure_ascii=ascii_only) for i in items]
    bodies = [
        "\n".join(lines).encode(),
        "\r\n".join(lines).encode() + b"\r\n",
        ("[" + ",".join(lines) + "]").encode(),
        json.dumps(items, indent=2, ensure_ascii=ascii_only).encode(),
    ]
    for body in bodies:
        got = [json.loads(v) for v in values(body)]
        assert got == items
        # dumps keeps dict order, so equal text means keys kept their order at every level.
        assert json.dumps(got) == json.dumps(items)


@pytest.mark.parametrize("form", ["ndjson", "array", "exact"])
def test_parsed_values_hold_only_their_own_bytes(form):
    # orjson.dumps results keep orjson's whole write buffer (about 4 KB each); items
    # are held until their transaction commits, so a large file would take 15x its size.
    lines = [b'{"id":"%d","amount":%d.5,"memo":"%s"}' % (i, i, b"m" * 150) for i in range(2000)]
    if form == "ndjson":
        body = b"\n".join(lines)
    elif form == "array":
        body = b"[" + b",".join(lines) + b"]"
    else:  # ", " separators: the exact path re-encodes every item
        body = b"\n".join(line.replace(b",", b", ") for line in lines)
    tracemalloc.start()
    try:
        items = parse_transactions(body, max_items=10_000)
        for item in items:
            item.obj.clear()  # count the values only
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(items) == 2000
    assert held / len(items) < 600, f"{held / len(items):.0f} bytes held per item"
