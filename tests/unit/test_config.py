from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from app.config import Settings, env_name, help_text, load_settings
from app.errors import ConfigError


def test_defaults_match_the_documented_ones():
    s = load_settings([], {})
    assert s.kafka_bootstrap_servers == "localhost:9092"
    assert (s.input_topic, s.output_topic, s.dlq_topic) == (
        "files-with-transactions", "transactions", "files-with-transactions.dlq")
    assert s.group_id == "files-with-transactions-group-1"
    assert s.transactional_id_prefix == s.group_id
    assert s.transactional_id_scheme == "pod"
    assert s.pod_name == socket.gethostname()
    assert s.http_port == 8080
    assert s.download_allow_private_networks is False
    assert s.output_key_field is None
    assert s.spool_dir == os.path.join(tempfile.gettempdir(), "txingest-spool")
    assert (s.spool_threshold_bytes, s.spool_max_bytes) == (64 << 20, 16 << 30)


def test_environment_then_flags_win():
    env = {"INPUT_TOPIC": "from-env", "MAX_ATTEMPTS": "7", "POD_NAME": "pod-3"}
    s = load_settings(["--input-topic", "from-flag"], env)
    assert s.input_topic == "from-flag"
    assert s.max_attempts == 7
    assert s.transactional_id(5) == "files-with-transactions-group-1-pod-3-5"
    per_partition = load_settings(["--input-topic", "from-flag"],
                                  {**env, "TRANSACTIONAL_ID_SCHEME": "Partition"})
    assert per_partition.transactional_id(5) == "files-with-transactions-group-1-from-flag-5"


def test_settings_are_frozen():
    s = load_settings([], {})
    with pytest.raises(AttributeError):
        s.input_topic = "x"  # type: ignore[misc]


@pytest.mark.parametrize("env, fragment", [
    ({"MAX_ATTEMPTS": "abc"}, "MAX_ATTEMPTS='abc': not a valid int"),
    ({"MAX_ATTEMPTS": "0"}, "MAX_ATTEMPTS='0': must be a positive integer"),
    ({"DOWNLOAD_ALLOW_PRIVATE_NETWORKS": "maybe"}, "must be true or false"),
    ({"HTTP_PORT": "70000"}, "HTTP_PORT='70000'"),
    ({"INPUT_TOPIC": "has space"}, "INPUT_TOPIC='has space'"),
    ({"LOG_FORMAT": "xml"}, "must be one of json, text"),
    ({"OUTPUT_TOPIC": "files-with-transactions"}, "must differ from INPUT_TOPIC"),
    ({"SHUTDOWN_TIMEOUT_S": "150"}, "SHUTDOWN_TIMEOUT_S"),
    ({"DEDUP": "url", "DEDUP_TOPIC": "transactions"}, "must differ from INPUT_TOPIC and from"),
    ({"DEDUP_RETENTION": "7w"}, "DEDUP_RETENTION='7w': not a valid float"),
    ({"DEDUP_RETENTION": "-1d"}, "must be a positive duration"),
    ({"DOWNLOAD_TOTAL_TIMEOUT_S": "nan"}, "must be a positive number"),
    ({"SPOOL_THRESHOLD_BYTES": "0"}, "SPOOL_THRESHOLD_BYTES='0': must be a positive integer"),
    ({"SPOOL_MAX_BYTES": "1000", "SPOOL_THRESHOLD_BYTES": "2000"},
     "SPOOL_MAX_BYTES=1000: must be at least SPOOL_THRESHOLD_BYTES (2000)"),
    ({"SPOOL_DIR": "/dev/null/spool"}, "SPOOL_DIR='/dev/null/spool': must be a directory"),
    ({"FILE_CHUNK_RECORDS": "-1"}, "FILE_CHUNK_RECORDS='-1': must be"),
    ({"FILE_CHUNK_RECORDS": "10", "PROCESSING_GUARANTEE": "at_least_once"},
     "FILE_CHUNK_RECORDS: chunks need PROCESSING_GUARANTEE=exactly_once"),
    ({"FILE_CHUNK_RECORDS": "10", "PROGRESS_TOPIC": "transactions"},
     "must differ from INPUT_TOPIC and from"),
])
def test_invalid_values_name_the_setting(env, fragment):
    with pytest.raises(ConfigError) as err:
        load_settings([], env)
    assert fragment in str(err.value)


def test_help_lists_every_setting_with_its_variable():
    text = help_text()
    for name in Settings.__dataclass_fields__:
        assert f"--{name.replace('_', '-')}" in text
        assert name.upper() in text


def test_bad_setting_stops_the_process_with_one_line():
    result = subprocess.run([sys.executable, "-m", "app"], capture_output=True, text=True,
                            env={"MAX_FILE_BYTES": "-5", "PATH": ""}, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["txingest: invalid setting MAX_FILE_BYTES='-5': must be a positive integer"]


def test_readme_documents_every_setting():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for field in dataclasses.fields(Settings):
        assert f"| `{env_name(field)}` | `--{field.name.replace('_', '-')}` |" in readme



@pytest.mark.parametrize("argv, env, window", [
    ([], {}, 8),
    ([], {"TRANSACTION_MAX_RECORDS": "32"}, 32),
    (["--transaction-max-records", "128"], {}, 128),
    ([], {"TRANSACTION_MAX_RECORDS": "4"}, 8),
    ([], {"TRANSACTION_MAX_RECORDS": "32", "PREFETCH_PER_PARTITION": "64"}, 64),
    ([], {"TRANSACTION_MAX_RECORDS": "32", "PREFETCH_PER_PARTITION": "32"}, 32),
])
def test_the_window_is_sized_from_transaction_max_records_unless_set(argv, env, window):
    assert load_settings(argv, env).prefetch_per_partition == window


@pytest.mark.parametrize("argv, env", [
    ([], {"TRANSACTION_MAX_RECORDS": "32", "PREFETCH_PER_PARTITION": "8"}),
    (["--prefetch-per-partition", "8"], {"TRANSACTION_MAX_RECORDS": "32"}),
    (["--transaction-max-records", "9", "--prefetch-per-partition", "8"], {}),
])
def test_an_explicit_window_smaller_than_a_group_is_still_refused(argv, env):
    with pytest.raises(ConfigError) as err:
        load_settings(argv, env)
    assert str(err.value) == ("invalid setting PREFETCH_PER_PARTITION: must be at least "
                              "TRANSACTION_MAX_RECORDS, or groups could never fill")


def test_a_url_limit_of_8_kib_by_default_and_a_bad_one_named():
    assert load_settings([], {}).max_url_bytes == 8192
    assert load_settings([], {"MAX_URL_BYTES": "100000"}).max_url_bytes == 100_000
    with pytest.raises(ConfigError) as err:
        load_settings([], {"MAX_URL_BYTES": "0"})
    assert str(err.value) == "invalid setting MAX_URL_BYTES='0': must be a positive integer"


def test_transaction_protocol_is_auto_unless_chosen():
    assert load_settings([], {}).transaction_protocol == "auto"
    assert load_settings([], {"TRANSACTION_PROTOCOL": "V1"}).transaction_protocol == "v1"
    with pytest.raises(ConfigError) as err:
        load_settings([], {"TRANSACTION_PROTOCOL": "v3"})
    assert str(err.value) == ("invalid setting TRANSACTION_PROTOCOL='v3': "
                              "must be one of auto, v2, v1")
