"""Settings: read once at start from flags and the environment, then frozen.

Every setting is an environment variable and a ``python -m app`` flag (the flag
wins). Nothing else in the service reads the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app import values as v  # the parsers, short in the table below
from app.errors import ConfigError
from app.files.parse_csv import Column, parse_columns
from app.files.spool import spool_setting_problem

DEFAULT_MAX_URL_BYTES = 8 * 1024  # what common HTTP servers accept in a request line


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap_servers: str = v.setting(
        "localhost:9092", v.kafka_name, "Kafka brokers, host:port,...")
    kafka_security_protocol: str = v.setting(
        "PLAINTEXT", v.choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
        "how to reach Kafka")
    kafka_sasl_mechanism: str = v.setting(
        "SCRAM-SHA-512", v.choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"), "SASL mechanism")
    kafka_sasl_username: str | None = v.setting(None, v.optional_name, "SASL user name")
    kafka_sasl_password: str | None = v.secret("SASL password")
    kafka_ssl_cafile: str | None = v.setting(None, v.optional_name, "CA bundle to trust (PEM)")
    kafka_ssl_certfile: str | None = v.setting(None, v.optional_name, "client certificate (PEM)")
    kafka_ssl_keyfile: str | None = v.setting(None, v.optional_name, "client private key (PEM)")
    input_topic: str = v.setting("files-with-transactions", v.kafka_name, "topic of file URLs")
    output_topic: str = v.setting("transactions", v.kafka_name, "topic the transactions go to")
    dlq_topic: str = v.setting("files-with-transactions.dlq", v.kafka_name, "dead-letter topic")
    group_id: str = v.setting("files-with-transactions-group-1", v.kafka_name, "consumer group")
    transactional_id_prefix: str | None = v.setting(
        None, v.optional_name, "prefix of the transactional ids (default: GROUP_ID)")
    transactional_id_scheme: str = v.setting(
        "pod", v.choice("pod", "partition"),
        "pod: ids PREFIX-POD_NAME-n, warm producers kept across rebalances (needs KIP-447); "
        "partition: ids PREFIX-INPUT_TOPIC-p, a new producer per assignment")
    pod_name: str | None = v.setting(
        None, v.optional_name, "this replica's identity (default: the host name)")
    static_membership: bool = v.setting(
        True, v.boolean, "use POD_NAME as group.instance.id (no rebalance on a quick restart)")
    http_port: int = v.setting(8080, v.port, "health and metrics port (0: off)")
    health_stall_s: float = v.setting(
        60.0, v.positive_float, "/healthz fails after the poll loop is stuck this long")
    download_allow_private_networks: bool = v.setting(
        False, v.boolean, "allow downloads from loopback and private addresses (demos, tests)")
    download_allowed_hosts: str = v.setting(
        "", str, "comma-separated host or host:port exempt from the private-network block")
    download_allowed_ports: str = v.setting(
        "", v.ports, "comma-separated ports downloads may use (default: any)")
    download_max_redirects: int = v.setting(
        3, v.non_negative_int, "redirects followed, each re-checked (0: none)")
    output_key_field: str | None = v.setting(
        None, v.optional_name, "transaction field to key output records by (default: the URL)")
    csv_columns: tuple[Column, ...] | None = v.setting(
        None, parse_columns, "CSV columns to transaction fields, column[=field][:number][?],..."
        " (default: every column, a string field named by the header)")
    prefetch_per_partition: int = v.setting(
        8, v.positive_int, "records downloaded ahead per partition while one commits; at "
        "least TRANSACTION_MAX_RECORDS (raised to it when not set)")
    transaction_max_records: int = v.setting(
        1, v.positive_int, "input records per transaction at most (1: one transaction a file)")
    max_concurrent_downloads: int = v.setting(
        32, v.positive_int, "downloads at once, all partitions")
    max_buffered_bytes: int = v.setting(
        256 * 1024 * 1024, v.positive_int, "no new download starts while this much is buffered")
    spool_dir: str | None = v.setting(
        None, v.optional_name, "directory for files bigger than SPOOL_THRESHOLD_BYTES, one "
        "subdirectory per POD_NAME (default: the temp directory's txingest-spool)")
    spool_threshold_bytes: int = v.setting(
        64 * 1024 * 1024, v.positive_int, "a file whose decoded body passes this is spooled "
        "to disk and streamed through its transaction instead of held in memory")
    spool_max_bytes: int = v.setting(
        16 * 1024 ** 3, v.positive_int, "disk the spool may use: a file that does not fit "
        "waits for room; one bigger than this is dead-lettered (too_large_for_spool)")
    file_chunk_records: int = v.setting(
        0, v.non_negative_int, "a spooled file goes in transactions of at most this many "
        "outputs, with a resume point in PROGRESS_TOPIC (0: off, one transaction a file)")
    progress_topic: str | None = v.setting(
        None, v.optional_name, "compacted topic of the chunked files' resume points "
        "(default: GROUP_ID-progress)")
    download_connect_timeout_s: float = v.setting(10.0, v.positive_float, "connect timeout")
    download_read_timeout_s: float = v.setting(30.0, v.positive_float, "timeout between reads")
    download_total_timeout_s: float = v.setting(120.0, v.positive_float, "timeout per download")
    max_file_bytes: int = v.setting(
        16 * 1024 ** 3, v.positive_int, "largest file, after decompression")
    max_transactions_per_file: int = v.setting(
        100_000_000, v.positive_int, "largest file, in items")
    max_record_bytes: int = v.setting(
        1_000_000, v.positive_int, "largest output record; larger ones are dead-lettered")
    max_url_bytes: int = v.setting(
        DEFAULT_MAX_URL_BYTES, v.positive_int,
        "longest input URL; a longer one is dead-lettered (url_too_long), never downloaded")
    max_attempts: int = v.setting(5, v.positive_int, "download attempts before dead-lettering")
    retry_backoff_s: float = v.setting(0.5, v.positive_float, "first retry delay (doubles, jitter)")
    retry_backoff_max_s: float = v.setting(30.0, v.positive_float, "longest retry delay")
    shutdown_timeout_s: float = v.setting(
        30.0, v.positive_float, "time to finish in-flight transactions on stop or revoke")
    transaction_timeout_ms: int = v.setting(
        120_000, v.positive_int, "Kafka transaction.timeout.ms; a file must commit within it")
    session_timeout_ms: int = v.setting(10_000, v.positive_int, "consumer group session timeout")
    kafka_retry_backoff_ms: int = v.setting(
        20, v.positive_int, "producer retry backoff (back-to-back transactions wait on it)")
    kafka_metadata_max_age_ms: int = v.setting(
        300_000, v.positive_int, "Kafka metadata refresh; new input partitions are seen within it")
    dedup: str = v.setting("off", v.choice("off", "url", "content"),
                          "skip inputs whose file URL (url) or body (content) was committed")
    dedup_topic: str | None = v.setting(
        None, v.optional_name, "compacted changelog of the dedup store (default: GROUP_ID-dedup)")
    dedup_retention: float = v.setting(
        7 * 86400.0, v.duration, "how long a key is remembered (s, or with m, h, d)")
    dedup_max_entries: int = v.setting(
        1_000_000, v.positive_int, "keys remembered per input partition (oldest go first)")
    dedup_replication_factor: int = v.setting(
        0, v.non_negative_int, "replicas of a created DEDUP_TOPIC (0: min(3, brokers))")
    processing_guarantee: str = v.setting(
        "exactly_once", v.choice("exactly_once", "at_least_once"),
        "at_least_once: no transactions (a baseline for benchmarks)")
    transaction_protocol: str = v.setting(
        "auto", v.choice("auto", "v2", "v1"),
        "Kafka transaction protocol: auto (the best the cluster offers), v2 (KIP-890), "
        "v1 (older, with KIP-447)")
    log_level: str = v.setting("info", v.choice("debug", "info", "warning", "error"), "log level")
    log_format: str = v.setting("json", v.choice("json", "text"), "log line format")

    def transactional_id(self, number: int) -> str:
        """Producer ``number``'s id: this replica's slot n (scheme pod) or the input
        partition (scheme partition); see docs/design.md."""
        if self.transactional_id_scheme == "pod":
            return f"{self.transactional_id_prefix}-{self.pod_name}-{number}"
        return f"{self.transactional_id_prefix}-{self.input_topic}-{number}"

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
    return _derive(settings, given=frozenset(values))


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


def _check_csv_columns(settings: Settings) -> None:
    key, columns = settings.output_key_field, settings.csv_columns
    if columns is not None and key is not None and key not in {c.field for c in columns}:
        raise ConfigError(f"invalid setting CSV_COLUMNS: has no field {key!r} "
                          "(OUTPUT_KEY_FIELD), so every CSV file would be dead-lettered")


def _check_spool(settings: Settings) -> None:
    problem = spool_setting_problem(str(settings.spool_dir), settings.spool_threshold_bytes,
                                    settings.spool_max_bytes)
    if problem is not None:
        raise ConfigError(f"invalid setting {problem}")


def _derive(settings: Settings, given: frozenset[str]) -> Settings:
    """Defaults that depend on other settings, then the checks across settings."""
    derived: dict[str, Any] = {}
    if "prefetch_per_partition" not in given:  # one knob alone must work
        derived["prefetch_per_partition"] = max(settings.prefetch_per_partition,
                                                settings.transaction_max_records)
    if settings.transactional_id_prefix is None:
        derived["transactional_id_prefix"] = settings.group_id
    if settings.dedup_topic is None:
        derived["dedup_topic"] = f"{settings.group_id}-dedup"
    if settings.progress_topic is None:
        derived["progress_topic"] = f"{settings.group_id}-progress"
    if settings.pod_name is None:
        derived["pod_name"] = socket.gethostname()
    if settings.spool_dir is None:
        derived["spool_dir"] = os.path.join(tempfile.gettempdir(), "txingest-spool")
    settings = dataclasses.replace(settings, **derived)
    if settings.retry_backoff_max_s < settings.retry_backoff_s:
        raise ConfigError("invalid setting RETRY_BACKOFF_MAX_S: must be >= RETRY_BACKOFF_S")
    _check_topics(settings)
    _check_security(settings)
    _check_csv_columns(settings)
    _check_spool(settings)
    if settings.prefetch_per_partition < settings.transaction_max_records:
        raise ConfigError("invalid setting PREFETCH_PER_PARTITION: must be at least "
                          "TRANSACTION_MAX_RECORDS, or groups could never fill")
    if settings.file_chunk_records and settings.processing_guarantee != "exactly_once":
        raise ConfigError("invalid setting FILE_CHUNK_RECORDS: chunks need "
                          "PROCESSING_GUARANTEE=exactly_once (each is a transaction)")
    if settings.shutdown_timeout_s * 1000 >= settings.transaction_timeout_ms:
        raise ConfigError("invalid setting SHUTDOWN_TIMEOUT_S: must be shorter than "
                          "TRANSACTION_TIMEOUT_MS, or a closing transaction times out")
    return settings


def _check_topics(settings: Settings) -> None:
    topics = [settings.input_topic, settings.output_topic, settings.dlq_topic]
    if settings.dedup != "off":
        topics.append(str(settings.dedup_topic))
    if settings.file_chunk_records:
        topics.append(str(settings.progress_topic))
    if len(set(topics)) < len(topics):
        raise ConfigError("invalid setting OUTPUT_TOPIC/DLQ_TOPIC/DEDUP_TOPIC/PROGRESS_TOPIC: "
                          "must differ from INPUT_TOPIC and from each other")


def help_text() -> str:
    return _parser().format_help()
