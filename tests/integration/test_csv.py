"""CSV files end to end: served by the project's file server (plain, a .csv.gz file, gzip
Content-Encoding under text/csv), through the service, to the real broker; a malformed
one dead-lettered naming its row."""

from __future__ import annotations

import gzip

import orjson

from tests.integration.harness import (
    Route,
    assert_exactly_once,
    create_topics,
    lag,
    produce,
    read_all,
    service_env,
    wait_until,
)

COLUMNS = "id=tx,acct=account,amount:number,currency,memo?"
MEMOS = ['a, "quoted" memo', "two\r\nlines", "naïve café ✓", ""]


def rows(name: str, count: int) -> list[tuple[str, str, str, str, str]]:
    """(id, acct, amount, currency, memo): amounts no float or int64 holds exactly."""
    return [(f"{name}-{i}", f"acct-{i % 7}", f"{10**25 + i}.{i:03d}0", "EUR", MEMOS[i % 4])
            for i in range(count)]


def csv_body(table: list[tuple[str, ...]]) -> bytes:
    """A CSV export as Windows tools write one: BOM, CRLF, every text field quoted."""
    def quoted(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'
    lines = ["id,acct,amount,currency,memo"]
    lines += [",".join((quoted(i), a, amount, cur, quoted(memo)))
              for i, a, amount, cur, memo in table]
    return ("\ufeff" + "\r\n".join(lines) + "\r\n").encode()


def expected(table: list[tuple[str, ...]]) -> list[bytes]:
    """What the service must write: fields renamed and in CSV_COLUMNS' order, the amount
    a JSON number with its digits as written."""
    def text(value: str) -> str:
        return orjson.dumps(value).decode()
    return [(f'{{"tx":{text(i)},"account":{text(a)},"amount":{amount},'
             f'"currency":{text(cur)},"memo":{text(memo)}}}').encode()
            for i, a, amount, cur, memo in table]


async def test_csv_files_become_exact_transactions_and_a_bad_row_is_dead_lettered(
        kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=2, name="csv")
    plain, zipped, encoded = rows("plain", 9), rows("zipped", 12), rows("encoded", 5)
    urls = {
        file_server.add("daily/ledger.csv", Route(csv_body(plain))): plain,
        file_server.add("daily/ledger-2.csv.gz",
                        Route(gzip.compress(csv_body(zipped)),
                              headers={"Content-Type": "application/gzip"})): zipped,
        file_server.add("export", Route(  # only its Content-Type says CSV
            gzip.compress(csv_body(encoded)),
            headers={"Content-Type": "text/csv; charset=utf-8",
                     "Content-Encoding": "gzip"})) + "?day=3": encoded,
    }
    broken = csv_body(plain[:3]) + b'"plain-x",acct-1,12.5.0,EUR,""\r\n'
    bad_url = file_server.add("daily/broken.csv", Route(broken))
    await produce(kafka_bootstrap, topics.input, [u.encode() for u in [*urls, bad_url]],
                  topics.partitions)

    env = service_env(kafka_bootstrap, topics, CSV_COLUMNS=COLUMNS)
    service = services(env).start()

    async def committed() -> bool:
        return await lag(kafka_bootstrap, topics) == 0
    await wait_until(committed, 90, "every input committed")
    assert await service.stop() == 0

    outputs = await read_all(kafka_bootstrap, topics.output)
    assert_exactly_once(outputs, {url: expected(table) for url, table in urls.items()})
    (letter,) = [orjson.loads(r.value) for r in await read_all(kafka_bootstrap, topics.dlq)]
    assert (letter["url"], letter["reason"]) == (bad_url, "invalid_number")
    assert letter["error"] == "row 4 (line 6): 'amount' is '12.5.0', not a number"
