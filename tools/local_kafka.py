"""A single-node KRaft Kafka broker on this machine, from Kafka's own jars.

No Docker needed: Maven resolves ``org.apache.kafka:kafka_2.13`` into a git-ignored
cache; the broker runs as a plain ``java`` process whose pid (and version) is kept
beside its data so ``down`` can stop it and ``restart`` runs the same jars.

The version is ``$KAFKA_VERSION`` if set (e.g. 3.9.1), else the one pinned in
tools/kafka/pom.xml. 3.x and 4.x brokers take the same KRaft setup (static
``controller.quorum.voters``, StorageTool ``format``, log4j2 through SLF4J); settings
a 3.x broker does not know are left out for it (see :func:`for_version`).

    KAFKA_VERSION=3.9.1 python tools/local_kafka.py up [--port 9092] [--data DIR]
    python tools/local_kafka.py up   [--port 9092] [--data DIR] [--security sasl_ssl]
    python tools/local_kafka.py down [--data DIR]

Tests import :func:`start` and :func:`stop` to run a private broker on a free
port. ``security="sasl_ssl"`` makes the client listener SASL_SSL with SCRAM-SHA-512
and SCRAM-SHA-256, its certificate signed by a throwaway CA made with openssl in the
data dir (tools/kafka_security.py). Standard library only, so it works before the venv
exists.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python tools/local_kafka.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.kafka_security import Secured, secure_data_dir, secured_in

ROOT = Path(__file__).resolve().parent.parent
POM = ROOT / "tools" / "kafka" / "pom.xml"
CACHE = Path(os.environ.get("TXINGEST_CACHE", ROOT / ".cache"))
DEFAULT_DATA = CACHE / "kafka-data"
READY_LINE = "Kafka Server started"
VERSION_ENV = "KAFKA_VERSION"
VERSION_FORM = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
# Settings only 4.x brokers know (share groups): a 3.x broker would warn on each.
SINCE_4 = ("share.coordinator.",)
SECURITY = ("plaintext", "sasl_ssl")
BROKER_ARTIFACT = "kafka_2.13"

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def pinned_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if not match:
        raise SystemExit(f"no <kafka.version> in {POM}")
    return match.group(1)


def kafka_version() -> str:
    """The broker version to run: ``$KAFKA_VERSION`` if set, else the pinned one."""
    chosen = os.environ.get(VERSION_ENV, "").strip()
    if not chosen:
        return pinned_version()
    if not VERSION_FORM.fullmatch(chosen):
        raise SystemExit(f"{VERSION_ENV}={chosen!r} is not a Kafka version like 3.9.1 or 4.4.0")
    return chosen


def major(version: str) -> int:
    return int(version.split(".")[0])


def for_version(props: dict[str, str], version: str) -> dict[str, str]:
    """``props`` less the settings that ``version``'s broker does not know."""
    if major(version) >= 4:
        return props
    return {k: v for k, v in props.items() if not k.startswith(SINCE_4)}


def libs(version: str | None = None, artifact: str = BROKER_ARTIFACT) -> Path:
    """Resolve the broker's jars (or ``artifact``'s: kafka-tools) once; later calls
    reuse the cache. Each artifact has its own directory, so adding one never
    re-resolves the broker's jars under a running broker."""
    version = version or kafka_version()
    target = CACHE / "kafka" / version / ("libs" if artifact == BROKER_ARTIFACT
                                          else f"{artifact}-libs")
    if (target / ".complete").exists():
        return target
    staging = target.with_name(f"{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    print(f"resolving Kafka {version} jars ({artifact}) with Maven into {target}",
          file=sys.stderr)
    subprocess.run(
        ["mvn", "-q", "-B", "-f", str(POM), f"-Dkafka.version={version}",
         f"-Dkafka.artifact={artifact}", "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={staging}"],
        check=True,
    )
    (staging / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class Broker:
    port: int
    data: Path
    pid: int
    secured: Secured | None = None
    version: str = ""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def server_properties(port: int, controller_port: int, data: Path, extra: dict[str, str],
                      version: str | None = None) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data / "logs"),
        # Single node: every internal topic has one replica.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "8",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "1",
        # Abort timed-out transactions within a quarter second, not ten: the test of the
        # transaction_timeout dead letter needs every one of its long transactions
        # aborted, and one lasts only a little longer than the timeout plus this.
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "250",
    }
    props.update(extra)
    props = for_version(props, version or kafka_version())
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _pidfile(data: Path) -> Path:
    return data / "broker.pid"


def _version_of(data: Path) -> str:
    """The version this data dir was formatted with (older dirs: the current choice)."""
    try:
        return (data / "broker.version").read_text().strip()
    except OSError:
        return kafka_version()


def running(data: Path) -> Broker | None:
    try:
        pid = int(_pidfile(data).read_text())
        port = int((data / "broker.port").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return Broker(port, data, pid, secured_in(data), _version_of(data))


def start(port: int | None = None, data: Path | None = None, timeout: float = 120,
          extra: dict[str, str] | None = None, security: str = "plaintext") -> Broker:
    """Start a fresh broker (or find the one already running in ``data``).

    ``security="sasl_ssl"``: the listener on ``port`` is SASL_SSL; the broker's
    ``secured`` names the CA to trust and the SCRAM user to log in as.
    """
    if security not in SECURITY:
        raise SystemExit(f"unknown security {security!r}: use one of {', '.join(SECURITY)}")
    data = (data or DEFAULT_DATA).resolve()
    found = running(data)
    if found:
        return found
    version = kafka_version()
    jars = libs(version)
    port = port or free_port()
    if port_open(port):
        raise SystemExit(f"port {port} is taken by another process; choose another with --port")
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    controller_port = free_port()
    props, format_args = ({}, []) if security == "plaintext" else secure_data_dir(
        data, port, controller_port, free_port())
    props.update(extra or {})
    (data / "server.properties").write_text(
        server_properties(port, controller_port, data, props, version))
    (data / "log4j2.properties").write_text(LOG4J2.format(log=data / "server.log"))
    cluster_id = new_cluster_id()
    subprocess.run(
        [*java(jars, data), "kafka.tools.StorageTool", "format", "-t", cluster_id,
         "-c", str(data / "server.properties"), *format_args],
        check=True, stdout=subprocess.DEVNULL,
    )
    (data / "broker.port").write_text(str(port))
    (data / "broker.version").write_text(version)
    broker = _launch(jars, data, port, timeout)
    print(f"Kafka {version} broker started at {broker.bootstrap} (pid {broker.pid}, data {data})",
          file=sys.stderr)
    return broker


def restart(data: Path, timeout: float = 120) -> Broker:
    """Start again on the same data and port, after a crash or a stop with remove=False."""
    data = data.resolve()
    found = running(data)
    if found:
        return found
    return _launch(libs(_version_of(data)), data, int((data / "broker.port").read_text()),
                   timeout)


def kill(data: Path) -> None:
    """kill -9 the broker, keeping its data (for fault tests)."""
    broker = running(data.resolve())
    if broker:
        os.kill(broker.pid, signal.SIGKILL)
        while _alive(broker.pid):
            time.sleep(0.05)


def new_cluster_id() -> str:
    """Kafka's form: a UUID in URL-safe base64. One starting with '-' would be read
    as a command-line flag by StorageTool, so draw again."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def java(jars: Path, data: Path) -> list[str]:
    return [
        "java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={data / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={data}", "-cp", f"{jars}/*",
    ]


def _launch(jars: Path, data: Path, port: int, timeout: float) -> Broker:
    broker, proc, log_from = spawn(jars, data, port)
    wait_ready(broker, proc, timeout, log_from)
    return broker


def spawn(jars: Path, data: Path, port: int) -> tuple[Broker, subprocess.Popen, int]:
    """Start the java process on a formatted ``data`` dir; not yet ready. Returns the
    broker, its process and where this start's lines begin in server.log."""
    log = data / "server.log"
    started_at = log.stat().st_size if log.exists() else 0
    with open(data / "stdout.log", "ab") as out:
        proc = subprocess.Popen(
            [*java(jars, data), "kafka.Kafka", str(data / "server.properties")],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    _pidfile(data).write_text(str(proc.pid))
    return Broker(port, data, proc.pid, secured_in(data), _version_of(data)), proc, started_at


def wait_ready(broker: Broker, proc: subprocess.Popen, timeout: float, log_from: int) -> None:
    deadline = time.monotonic() + timeout
    log = broker.data / "server.log"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (broker.data / "stdout.log").read_text()[-2000:]
            raise SystemExit(f"Kafka exited with {proc.returncode} while starting:\n{tail}")
        if (log.exists() and READY_LINE in log.read_text(errors="replace")[log_from:]
                and port_open(broker.port)):
            return
        time.sleep(0.2)
    stop(broker.data)
    raise SystemExit(f"Kafka did not start within {timeout:.0f}s; see {log}")


def stop(data: Path | None = None, remove: bool = True, timeout: float = 30) -> None:
    """Stop the broker by its pid (SIGTERM, then SIGKILL) and drop its data."""
    data = (data or DEFAULT_DATA).resolve()
    broker = running(data)
    if broker:
        os.kill(broker.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(broker.pid):
            time.sleep(0.1)
        if _alive(broker.pid):
            os.kill(broker.pid, signal.SIGKILL)
    if remove:
        shutil.rmtree(data, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child; otherwise just probe it.
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "libs", "version"])
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--security", choices=SECURITY, default="plaintext")
    args = parser.parse_args()
    if args.command == "version":
        print(kafka_version())
    elif args.command == "libs":
        print(libs())
    elif args.command == "up":
        already = running(args.data.resolve())
        broker = start(args.port, args.data, security=args.security)
        state = "already running" if already else "started"
        print(f"Kafka {broker.version} {state} at {broker.bootstrap} (pid {broker.pid})")
        if already and broker.version != kafka_version():
            print(f"  not {kafka_version()}: `make kafka-down` first to change the version")
        if broker.secured:
            _print_secured(broker.secured)
    else:
        stop(args.data)
        print("Kafka stopped")


def _print_secured(secured: Secured) -> None:
    print(f"  SASL_SSL, {' or '.join(secured.mechanisms)}, user {secured.username!r}; "
          f"password in {secured.password_file}; CA {secured.cafile}")


if __name__ == "__main__":
    main()
