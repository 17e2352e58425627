"""Settings: read once at start from flags and the environment, then frozen.

Every setting is an environment variable and a ``python -m app`` flag (the flag
wins). Nothing else in the service reads the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.errors import ConfigError


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a positive number")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _ports(text: str) -> str:
    for part in filter(None, (p.strip() for p in text.split(","))):
        if not part.isdigit() or not 0 < int(part) <= 65535:
            raise ValueError("must be comma-separated port numbers 1-65535")
    return text


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 0-65535 (0 disables the HTTP server)")
    return value


def _name(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError("must be non-empty without whitespace")
    return text


def _optional_name(text: str) -> str | None:
    return _name(text) if text else None


def _choice(*options: str) -> Callable[[str], str]:
    """Case-insensitive; the value takes the options' own case."""
    by_folded = {option.casefold(): option for option in options}

    def parse(text: str) -> str:
        if text.casefold() not in by_folded:
            raise ValueError(f"must be one of {', '.join(options)}")
        return by_folded[text.casefold()]
    return parse


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1)
    value = float(number) * unit
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a positive duration: seconds, or a number with s, m, h or d")
    return value


def _secret(help: str) -> Any:
    """Never shown in repr or logs; may also come from a file (``NAME_FILE``)."""
    return dataclasses.field(default=None, repr=False, metadata={
        "parse": str, "help": help + " (or a file: VARIABLE_FILE)", "env": "", "secret": True})


def _setting(default: Any, parse: Callable[[str], Any], help: str, env: str = "") -> Any:
    return dataclasses.field(default=default, metadata={"parse": parse, "help": help, "env": env})


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap_servers: str = _setting("localhost:9092", _name, "Kafka brokers, host:port,...")
    kafka_security_protocol: str = _setting(
        "PLAINTEXT", _choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
        "how to reach Kafka")
    kafka_sasl_mechanism: str = _setting(
        "SCRAM-SHA-512", _choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"), "SASL mechanism")
    kafka_sasl_username: str | None = _setting(None, _optional_name, "SASL user name")
    kafka_sasl_password: str | None = _secret("SASL password")
    kafka_ssl_cafile: str | None = _setting(None, _optional_name, "CA bundle to trust (PEM)")
    kafka_ssl_certfile: str | None = _setting(None, _optional_name, "client certificate (PEM)")
    kafka_ssl_keyfile: str | None = _setting(None, _optional_name, "client private key (PEM)")
    input_topic: str = _setting("files-with-transactions", _name, "topic of file URLs")
    output_topic: str = _setting("transactions", _name, "topic the transactions go to")
    dlq_topic: str = _setting("files-with-transactions.dlq", _name, "dead-letter topic")
    group_id: str = _setting("files-with-transactions-group-1", _name, "consumer group")
    transactional_id_prefix: str | None = _setting(
        None, _optional_name, "prefix of per-partition transactional ids (default: GROUP_ID)")
    pod_name: str | None = _setting(
        None, _optional_name, "this replica's identity (default: the host name)")
    static_membership: bool = _setting(
        True, _bool, "use POD_NAME as group.instance.id (no rebalance on a quick restart)")
    http_port: int = _setting(8080, _port, "health and metrics port (0: off)")
    health_stall_s: float = _setting(
        60.0, _positive_float, "/healthz fails after the poll loop is stuck this long")
    download_allow_private_networks: bool = _setting(
        False, _bool, "allow downloads from loopback and private addresses (demos, tests)")
    download_allowed_hosts: str = _setting(
        "", str, "comma-separated host or host:port exempt from the private-network block")
    download_allowed_ports: str = _setting(
        "", _ports, "comma-separated ports downloads may use (default: any)")
    download_max_redirects: int = _setting(
        3, _non_negative_int, "redirects followed, each re-checked (0: none)")
    output_key_field: str | None = _setting(
        None, _optional_name, "transaction field to key output records by (default: the URL)")
    prefetch_per_partition: int = _setting(
        8, _positive_int, "records downloaded ahead per partition while one commits")
    transaction_max_records: int = _setting(
        1, _positive_int, "input records per transaction at most (1: one transaction a file)")
    max_concurrent_downloads: int = _setting(32, _positive_int, "downloads at once, all partitions")
    max_buffered_bytes: int = _setting(
        256 * 1024 * 1024, _positive_int, "no new download starts while this much is buffered")
    download_connect_timeout_s: float = _setting(10.0, _positive_float, "connect timeout")
    download_read_timeout_s: float = _setting(30.0, _positive_float, "timeout between reads")
    download_total_timeout_s: float = _setting(120.0, _positive_float, "timeout per download")
    max_file_bytes: int = _setting(
        64 * 1024 * 1024, _positive_int, "largest file, after decompression")
    max_transactions_per_file: int = _setting(1_000_000, _positive_int, "largest file, in items")
    max_record_bytes: int = _setting(
        1_000_000, _positive_int, "largest output record; larger ones are dead-lettered")
    max_attempts: int = _setting(5, _positive_int, "download attempts before dead-lettering")
    retry_backoff_s: float = _setting(0.5, _positive_float, "first retry delay (doubles, jitter)")
    retry_backoff_max_s: float = _setting(30.0, _positive_float, "longest retry delay")
    shutdown_timeout_s: float = _setting(
        30.0, _positive_float, "time to finish in-flight transactions on stop or revoke")
    transaction_timeout_ms: int = _setting(
        120_000, _positive_int, "Kafka transaction.timeout.ms; a file must commit within it")
    session_timeout_ms: int = _setting(10_000, _positive_int, "consumer group session timeout")
    kafka_retry_backoff_ms: int = _setting(
        20, _positive_int, "producer retry backoff (back-to-back transactions wait on it)")
    dedup: str = _setting("off", _choice("off", "url", "content"),
                          "skip inputs whose file URL (url) or body (content) was committed")
    dedup_topic: str | None = _setting(
        None, _optional_name, "compacted changelog of the dedup store (default: GROUP_ID-dedup)")
    dedup_retention: float = _setting(
        7 * 86400.0, _duration, "how long a key is remembered (s, or with m, h, d)")
    dedup_max_entries: int = _setting(
        1_000_000, _positive_int, "keys remembered per input partition (oldest go first)")
    dedup_replication_factor: int = _setting(
        0, _non_negative_int, "replicas of a created DEDUP_TOPIC (0: min(3, brokers))")
    processing_guarantee: str = _setting(
        "exactly_once", _choice("exactly_once", "at_least_once"),
        "at_least_once: no transactions (a baseline for benchmarks)")
    transaction_protocol: str = _setting(
        "auto", _choice("auto", "v2", "v1"),
        "Kafka transaction protocol: auto (the best the cluster offers), v2 (KIP-890), "
        "v1 (older, with KIP-447)")
    log_level: str = _setting("info", _choice("debug", "info", "warning", "error"), "log level")
    log_format: str = _setting("json", _choice("json", "text"), "log line format")

    def transactional_id(self, partition: int) -> str:
        """Scoped to the input partition, never the pod: see docs/design.md."""
        return f"{self.transactional_id_prefix}-{self.input_topic}-{partition}"

    @property
    def allowed_ports(self) -> frozenset[int]:
        return frozenset(int(p) for p in self.download_allowed_ports.split(",") if p.strip())

    @property
    def allowed_hosts(self) -> frozenset[str]:
        return frozenset(h.strip() for h in self.download_allowed_hosts.split(",") if h.strip())


def env_name(field: dataclasses.Field) -> str:
    return field.metadata["env"] or field.name.upper()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Exactly-once loader: Kafka topic of file URLs -> topic of transactions. "
        "Every flag is also an environment variable (shown in brackets); the flag wins.",
    )
    for field in dataclasses.fields(Settings):
        default = "" if field.default is None else field.default
        parser.add_argument(
            "--" + field.name.replace("_", "-"), dest=field.name, metavar="VALUE",
            help=f"{field.metadata['help']} [{env_name(field)}, default: {default!s}]",
        )
    return parser


def load_settings(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """Build the settings; raise ConfigError naming the first bad value."""
    flags, unknown = _parser().parse_known_args(argv)
    if unknown:
        raise ConfigError(f"unknown argument {unknown[0]!r}; see --help")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        raw = getattr(flags, field.name)
        if raw is None:
            raw = environ.get(env_name(field))
        if raw is None and field.metadata.get("secret"):
            raw = _read_secret_file(environ.get(env_name(field) + "_FILE"), env_name(field))
        if raw is None:
            continue
        try:
            values[field.name] = field.metadata["parse"](raw.strip())
        except ValueError as exc:
            reason = str(exc) if "must" in str(exc) else f"not a valid {field.type}"
            raise ConfigError(f"invalid setting {env_name(field)}={raw!r}: {reason}") from None
    settings = Settings(**values)
    return _derive(settings)


def _read_secret_file(path: str | None, name: str) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as secret:
            return secret.read().strip()
    except OSError as exc:
        raise ConfigError(f"invalid setting {name}_FILE={path!r}: {exc.strerror}") from None


def _check_security(settings: Settings) -> None:
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL") and not (settings.kafka_sasl_username
                                            and settings.kafka_sasl_password):
        raise ConfigError(f"invalid setting KAFKA_SECURITY_PROTOCOL={protocol}: needs "
                          "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD (or _FILE)")
    for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
        path = getattr(settings, name)
        if path and not os.path.isfile(path):
            raise ConfigError(f"invalid setting {name.upper()}={path!r}: no such file")
    if bool(settings.kafka_ssl_certfile) != bool(settings.kafka_ssl_keyfile):
        raise ConfigError("invalid setting KAFKA_SSL_CERTFILE/KAFKA_SSL_KEYFILE: "
                          "give both or neither")


def _derive(settings: Settings) -> Settings:
    derived: dict[str, Any] = {}
    if settings.transactional_id_prefix is None:
        derived["transactional_id_prefix"] = settings.group_id
    if settings.dedup_topic is None:
        derived["dedup_topic"] = f"{settings.group_id}-dedup"
    if settings.pod_name is None:
        derived["pod_name"] = socket.gethostname()
    settings = dataclasses.replace(settings, **derived)
    if settings.retry_backoff_max_s < settings.retry_backoff_s:
        raise ConfigError("invalid setting RETRY_BACKOFF_MAX_S: must be >= RETRY_BACKOFF_S")
    topics = [settings.input_topic, settings.output_topic, settings.dlq_topic]
    if settings.dedup != "off":
        topics.append(str(settings.dedup_topic))
    if len(set(topics)) < len(topics):
        raise ConfigError("invalid setting OUTPUT_TOPIC/DLQ_TOPIC/DEDUP_TOPIC: "
                          "must differ from INPUT_TOPIC and from each other")
    _check_security(settings)
    if settings.prefetch_per_partition < settings.transaction_max_records:
        raise ConfigError("invalid setting PREFETCH_PER_PARTITION: must be at least "
                          "TRANSACTION_MAX_RECORDS, or groups could never fill")
    if settings.shutdown_timeout_s * 1000 >= settings.transaction_timeout_ms:
        raise ConfigError("invalid setting SHUTDOWN_TIMEOUT_S: must be shorter than "
                          "TRANSACTION_TIMEOUT_MS, or a closing transaction times out")
    return settings


def help_text() -> str:
    return _parser().format_help()
