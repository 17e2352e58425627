"""`make redrive-demo`: a re-drive session on a private broker, printed as it runs.

Starts its own Kafka broker and file server, feeds the service five input records of
which three fail (a 404, a broken file, not a URL), stops it, then runs
``txingest redrive --dry-run`` with a filter, the real re-drive once the 404s are
fixed, and the service again on the re-driven records. Every command is printed with
its output verbatim; docs/redrive.md shows a captured run. Stops every process it
starts by its pid. Run it under the heavy lock: `flock /tmp/txingest-heavy.lock make redrive-demo`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

from tools import local_kafka
from tools.fileserver import FileServer, Route
from tools.kafka_io import Topics, by_source, create_topics, lag, produce, read_all
from tools.proc import ROOT, ChildProcess

TXINGEST = str(Path(sys.executable).parent / "txingest")  # the venv's console script
GOOD = b'{"tx":"a-1","amount":"10.00"}\n{"tx":"a-2","amount":"2.50"}\n'
LATE = b'{"tx":"b-1","amount":"7.00"}\n'


def show(line: str = "") -> None:
    print(line, flush=True)


def run(env: dict[str, str], *args: str) -> None:
    """Run ``txingest args`` and print the command and its output as a terminal would."""
    show(f"$ txingest {shlex.join(args)}")
    result = subprocess.run([TXINGEST, *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    for line in (result.stderr + result.stdout).splitlines():
        show(line)
    if result.returncode != 0:
        raise SystemExit(f"exit status {result.returncode}")


async def serve(env: dict[str, str], topics: Topics, log: Path) -> None:
    """The service until the group's lag is 0 (re-drive writes in transactions: the
    service commits past their markers), then SIGTERM; its dead-letter warnings and
    summary line."""
    show("$ txingest            # the service; SIGTERM once it has finished the new input")
    service = ChildProcess([TXINGEST], env, log).start()
    try:
        for _ in range(240):
            if await lag(env["KAFKA_BOOTSTRAP_SERVERS"], topics) == 0:
                break
            if not service.alive:
                raise SystemExit(f"the service exited with {service.returncode}")
            await asyncio.sleep(0.5)
        else:
            raise SystemExit("the service did not finish the input in 120 s")
    finally:
        code = await service.stop(60)
    for line in service.log_text(service.started_at_byte).splitlines():
        if "dead-lettering record" in line or "stopped:" in line:
            show("  " + line.split(" ", 2)[-1])  # without the time stamp
    show(f"  (exit status {code})")


async def print_topics(bootstrap: str, topics: Topics, letters: bool = True) -> None:
    outputs = await read_all(bootstrap, topics.output)
    dead = await read_all(bootstrap, topics.dlq)
    show(f"# output topic: {len(outputs)} transactions; DLQ: {len(dead)} dead letters")
    for url, records in sorted(by_source(outputs).items()):
        show(f"#   output: {len(records)} from {url}")
    for r in dead if letters else []:
        doc = orjson.loads(r.value)
        show(f"#   dlq offset {r.offset}: {doc['reason']:<22} input={doc['input']['value']}")


async def print_redriven(bootstrap: str, topics: Topics) -> None:
    """The input records re-drive wrote: the original key and value, and its headers."""
    for r in await read_all(bootstrap, topics.input):
        if r.headers:
            headers = " ".join(f"{k}={v.decode()}" for k, v in r.headers)
            show(f"#   input offset {r.offset}: key={r.key.decode()} "
                 f"value={r.value.decode()} {headers}")


async def session(bootstrap: str, files: FileServer) -> None:
    topics = await create_topics(bootstrap, 1, name="redrive-demo")
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "INPUT_TOPIC": topics.input,
           "OUTPUT_TOPIC": topics.output, "DLQ_TOPIC": topics.dlq, "GROUP_ID": topics.group,
           "POD_NAME": "demo-0", "HTTP_PORT": str(local_kafka.free_port()),
           "DOWNLOAD_ALLOW_PRIVATE_NETWORKS": "true", "LOG_FORMAT": "text"}
    show("$ export " + " ".join(f"{k}={v}" for k, v in env.items()
                                if k not in ("POD_NAME", "HTTP_PORT")))
    full_env = {**os.environ, **env}
    late = [files.add(f"late-{n}.ndjson", Route(b"", status=404)) for n in (1, 2)]
    inputs = [files.add("good.ndjson", Route(GOOD)), *late,
              files.add("broken.json", Route(b'[{"tx": "half a file"')), "not a url"]
    show(f"# {len(inputs)} input records: {', '.join(inputs)}")
    await produce(bootstrap, topics.input, [u.encode() for u in inputs], 1,
                  keys=[f"k{n}".encode() for n in range(len(inputs))])
    with tempfile.TemporaryDirectory() as logs:
        log = Path(logs) / "service.log"
        await serve(full_env, topics, log)
        await print_topics(bootstrap, topics)
        run(full_env, "redrive", "--dry-run", "--reason", "http_error,invalid_json")
        show("# the two late files are uploaded now; re-drive only the 404s")
        for n in (1, 2):
            files.routes[f"late-{n}.ndjson"] = Route(LATE)
        run(full_env, "redrive", "--reason", "http_error")
        await print_redriven(bootstrap, topics)
        show("# the same command again: that job is done")
        run(full_env, "redrive", "--reason", "http_error")
        await serve(full_env, topics, log)
        await print_topics(bootstrap, topics, letters=False)


async def main() -> int:
    data = Path(tempfile.mkdtemp(prefix="redrive-demo-kafka-"))
    broker = local_kafka.start(data=data)
    files = await FileServer().start()
    try:
        await session(broker.bootstrap, files)
    finally:
        await files.close()
        local_kafka.stop(data)  # by its pid, and its data removed
    return 0


if __name__ == "__main__":
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # topic-creation chatter
    sys.exit(asyncio.run(main()))
