"""Does the Kafka Streams peer do the service's job? ``python -m bench.kstreams_parity``.

Serves a set of files (NDJSON and arrays; exact numbers, whitespace, nesting at and past
the limit, gzip as a file and as Content-Encoding, HTTP errors) and puts the same input
record values through the service's own code (app/files/parse.py, app/files/fetch.py: one attempt)
and through the peer's ``--check`` mode (bench/kstreams/, one attempt). Each case must
give the same output values byte for byte, or the same reason to dead-letter or retry.
Needs the jar (``make kstreams-peer``) but no broker. Not a test and not in CI: the
peer is a benchmark tool (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import gzip
import subprocess
import sys
import zlib

from app.errors import IngestError, PoisonError
from app.files.fetch import Downloader, DownloadLimits
from app.files.input_url import parse_input_url
from app.files.parse import parse_transactions
from bench.kstreams_peer import JAR
from bench.workload import large_file, small_file
from tools.fileserver import FileServer, Route

MAX_ITEMS = 1_000_000  # the service's default MAX_TRANSACTIONS_PER_FILE


def _deep(n: int) -> str:
    return "{" + '"a":{' * (n - 1) + '"x":1' + "}" * n


def bodies() -> dict[str, bytes]:
    return {
        "small": small_file(3, 7)[0], "large": large_file(1, 7)[0],
        "numbers": b'{"a":1.50,"b":-0,"c":1e5,"d":123456789012345678901234567890,"e":-0.0}\n',
        "spaces": b'{ "a" : 1 , "b":[1, 2] }\r\n\n  {"z":"\\u00e9\\n\\"x\\"","y":"\xc3\xa9/"}\n',
        "pretty_array": b'[\n  {"a": 1.10},\n  {"b": [1,2,{"c":null}]}\n]\n',
        "compact_array": b'[{"a":1},{"b":"x"}]', "bom": b'\xef\xbb\xbf{"a":1}\n',
        "empty": b"  \n ", "depth64": (_deep(64) + "\n").encode(),
        "depth65": (_deep(65) + "\n").encode(), "array_depth65": f"[{_deep(65)}]".encode(),
        "not_object": b'{"a":1}\n[1,2]\n', "array_not_object": b'[{"a":1}, 3]',
        "invalid": b'{"a":1}\n{"a":\n', "nan": b'{"a":NaN}\n', "trailing": b'{"a":1} x\n',
        "bad_utf8": b'{"a":"\xff"}\n',
        "control": b'{"a":"\\u0001\\u001f\\b\\f\\/"}\n',
    }


def routes() -> dict[str, Route]:
    out = {name: Route(body) for name, body in bodies().items()}
    small = bodies()["small"]
    out["gzip_file"] = Route(gzip.compress(small))
    out["gzip_encoding"] = Route(gzip.compress(small), headers={"Content-Encoding": "gzip"})
    out["deflate_encoding"] = Route(zlib.compress(small), headers={"Content-Encoding": "deflate"})
    out["gzip_in_gzip"] = Route(gzip.compress(gzip.compress(small)),
                                headers={"Content-Encoding": "gzip"})
    out["truncated_gzip"] = Route(gzip.compress(small)[:-12])
    out["not_found"] = Route(status=404)
    out["unavailable"] = Route(status=503)
    return out


def inputs(base: str) -> list[str]:
    """Input record values: each route as plain text, and the other forms the service reads."""
    values = [f"{base}/{name}" for name in routes()]
    return values + [f'"{base}/small"', f'{{"url": "{base}/small"}}', "ftp://x/y", "[1]",
                     '{"link": "x"}', "  "]


async def service(values: list[str]) -> list[str]:
    downloader = Downloader(DownloadLimits(allow_private_networks=True))
    await downloader.start()
    out = []
    try:
        for value in values:
            try:
                items = parse_transactions(
                    await downloader.download(parse_input_url(value.encode())),
                    max_items=MAX_ITEMS)
                out.append(" ".join(["OK", *(item.value.hex() for item in items)]))
            except IngestError as exc:
                kind = "POISON" if isinstance(exc, PoisonError) else "TRANSIENT"
                out.append(f"{kind} {exc.reason}")
    finally:
        await downloader.close()
    return out


def peer(values: list[str]) -> list[str]:
    done = subprocess.run(["java", "-jar", str(JAR), "--check"], input="\n".join(values) + "\n",
                          capture_output=True, text=True, timeout=300, check=True)
    return done.stdout.splitlines()


async def main() -> int:
    server = await FileServer().start()
    for name, route in routes().items():
        server.add(name, route)
    try:
        values = inputs(server.base_url)
        want = await service(values)
        got = await asyncio.to_thread(peer, values)
    finally:
        await server.close()
    differ = 0
    for value, a, b in zip(values, want, got, strict=True):
        same = a == b
        differ += not same
        print(f"{'same' if same else 'DIFFERENT'}  {value[-40:]!r}: service {a[:60]}"
              + ("" if same else f"\n    peer {b[:60]}"))
    print(f"{len(values) - differ} same, {differ} different")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
