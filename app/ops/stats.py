"""What the service counts: Prometheus metrics, and the one-line summary on shutdown.

Each Stats owns its registry (no process-global state), so tests can build as
many as they like. Labels stay bounded: outcomes, results, reason codes and
partition numbers; never a URL or an id.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
LOOP_LAG_TICK_S = 0.1
# Every reason a dead letter can carry (README, "Reasons are stable codes"): created at
# start so each series exists at 0 and a rate over it works from the first scrape.
DEAD_LETTER_REASONS = (
    "invalid_input_record", "url_too_long", "http_error", "http_transient", "connection_error",
    "download_timeout", "truncated_body", "blocked_destination", "unsupported_url",
    "too_many_redirects", "file_too_large", "bad_gzip", "invalid_utf8", "invalid_json",
    "not_an_object", "nesting_too_deep", "invalid_csv", "missing_value", "invalid_number",
    "too_many_transactions", "missing_key_field",
    "record_too_large", "transaction_timeout", "internal_error", "too_large_for_spool",
    "array_too_large", "file_changed")
# app/kafka/committer.py's outcomes other than done, and why a partition's task was replaced.
COMMIT_FAILURES = ("retry", "fenced", "timed_out", "unknown", "fatal", "unauthorized")
RESTART_CAUSES = ("fenced", "failed", "start_failed", "unauthorized")


class Stats:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records = Counter("txingest_records", "Input records committed, by outcome",
                               ["outcome"], registry=r)
        self.outputs = Counter("txingest_output_records", "Transactions written to the output",
                               registry=r)
        self.transactions = Counter("txingest_transactions", "Kafka transactions, by result",
                                    ["result"], registry=r)
        self.dead_letters = Counter("txingest_dead_letters", "Input records dead-lettered, "
                                    "by the dead letter's reason code", ["reason"], registry=r)
        self.retries_by_reason = Counter("txingest_retries", "Work tried again, by reason",
                                         ["reason"], registry=r)
        self.download_seconds = Histogram("txingest_download_seconds", "Time per download",
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.download_bytes = Counter("txingest_download_bytes", "Bytes downloaded "
                                      "(after decompression)", registry=r)
        self.download_resumes = Counter("txingest_download_resumes", "Downloads cut off "
                                        "half-way, resumed with a Range request", registry=r)
        self.commit_seconds = Histogram("txingest_commit_seconds", "Time from begin to commit",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.assigned = Gauge("txingest_assigned_partitions", "Input partitions held",
                              registry=r)
        self.inflight = Gauge("txingest_inflight_records", "Records received, not yet committed",
                              registry=r)
        self.lag = Gauge("txingest_consumer_lag", "Records behind the input's last stable offset",
                         ["partition"], registry=r)
        self._add_runtime_metrics(r)
        self._add_partition_metrics(r)
        for outcome in ("committed", "dead_lettered", "duplicate"):
            self.records.labels(outcome)
        for result in ("committed", "aborted"):
            self.transactions.labels(result)
        # Counted once or twice per record: the children, looked up once.
        self._records_committed = self.records.labels("committed")
        self._transactions_committed = self.transactions.labels("committed")
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        # Plain totals for the shutdown summary and tests.
        self.totals: collections.Counter[str] = collections.Counter()

    def _add_runtime_metrics(self, r: CollectorRegistry) -> None:
        """Memory, deduplication, the Kafka client and the event loop."""
        self.memory_reserved = Gauge("txingest_memory_reserved_bytes", "Memory counted against "
                                     "MAX_BUFFERED_BYTES (downloads, parsing, prepared records)",
                                     registry=r)
        self.memory_peak = Gauge("txingest_memory_reserved_peak_bytes",
                                 "Most memory ever counted against MAX_BUFFERED_BYTES", registry=r)
        self.duplicates = Counter("txingest_duplicates", "Input records skipped as repeats "
                                  "of a committed one (DEDUP)", registry=r)
        self.dedup_entries = Gauge("txingest_dedup_entries", "Keys in the dedup store at its "
                                   "last restore", ["partition"], registry=r)
        self.dedup_restore_seconds = Histogram("txingest_dedup_restore_seconds",
                                               "Time to restore a partition's dedup store",
                                               buckets=LATENCY_BUCKETS, registry=r)
        self.input_rewinds = Counter("txingest_input_rewinds", "Times an input partition's "
                                     "log went back below the records received (truncated, "
                                     "or the topic recreated): processed again from there",
                                     registry=r)
        self.zombies_fenced = Counter("txingest_zombies_fenced", "Open transactions of "
                                      "replicas gone from the group, fenced because they held "
                                      "a partition's offsets", registry=r)
        self.kafka_errors = Counter("txingest_kafka_client_errors", "Warnings and errors "
                                    "logged by the Kafka client (summarised in the log)",
                                    registry=r)
        self.loop_lag = Histogram("txingest_event_loop_lag_seconds", "How late the event loop "
                                  "ran a timer (a blocked loop delays heartbeats and commits)",
                                  buckets=LOOP_LAG_BUCKETS, registry=r)
        self.loop_lag_max = Gauge("txingest_event_loop_lag_max_seconds",
                                  "The event loop's worst lag since start", registry=r)

    def _add_partition_metrics(self, r: CollectorRegistry) -> None:
        """Per partition: is it moving, and if not, why (docs/operations.md, alerts)."""
        self.stalled = Gauge("txingest_partition_stalled_seconds", "Seconds the partition has "
                             "had work (or no running task) without a commit; 0 when idle",
                             ["partition"], registry=r)
        self.transaction_open = Gauge("txingest_transaction_open_seconds", "Age of the "
                                      "partition's commit in progress; 0 when none",
                                      ["partition"], registry=r)
        self.unauthorized = Gauge("txingest_partition_unauthorized", "1 while the partition "
                                  "waits because the broker refused an ACL", ["partition"],
                                  registry=r)
        self.task_restarts = Counter("txingest_task_restarts", "Partition tasks replaced, by "
                                     "cause", ["partition", "cause"], registry=r)
        self.commit_failures = Counter("txingest_commit_failures", "Commits that did not "
                                       "commit, by outcome", ["outcome"], registry=r)
        self.transaction_timeout = Gauge("txingest_transaction_timeout_seconds",
                                         "TRANSACTION_TIMEOUT_MS, for alert rules", registry=r)
        self.producers = Gauge("txingest_producers", "Transactional producers of this "
                               "replica: idle (warm, pooled) or in_use by a partition task",
                               ["state"], registry=r)
        self.producer_inits = Counter("txingest_producer_inits", "Producers initialised "
                                      "(InitProducerId): a new or settled slot of the pool, "
                                      "or every task's own producer", registry=r)
        self.protocol = Gauge("txingest_transaction_protocol", "1: the transaction protocol "
                              "spoken (protocol) and the best the cluster offers (offered)",
                              ["protocol", "offered"], registry=r)
        for outcome in COMMIT_FAILURES:
            self.commit_failures.labels(outcome)
        self.producers_held(idle=0, in_use=0)

    def partition_assigned(self, partition: int) -> None:
        """Every series of the partition exists from its assignment on, at 0."""
        label = str(partition)
        for gauge in (self.stalled, self.transaction_open, self.unauthorized):
            gauge.labels(label).set(0)
        for cause in RESTART_CAUSES:
            self.task_restarts.labels(label, cause)

    def partition_revoked(self, partition: int) -> None:
        """Its gauges go: another replica reports the partition now (counters stay)."""
        for gauge in (self.lag, self.stalled, self.transaction_open, self.unauthorized):
            with contextlib.suppress(KeyError):
                gauge.remove(str(partition))

    def committed(self, outputs: int) -> None:
        self._records_committed.inc()
        self.outputs.inc(outputs)
        self.totals["committed"] += 1
        self.totals["outputs"] += outputs

    def dead_lettered(self, reason: str) -> None:
        self.records.labels("dead_lettered").inc()
        self.dead_letters.labels(reason).inc()
        self.totals.update(dead_lettered=1)

    def duplicate(self) -> None:
        self.records.labels("duplicate").inc()
        self.duplicates.inc()
        self.totals.update(duplicates=1)

    def protocol_chosen(self, speaking: str, offered: str) -> None:
        """The transaction protocol spoken, and the best the cluster offers, as labels."""
        self.protocol.labels(speaking, offered).set(1)

    def producers_held(self, idle: int, in_use: int) -> None:
        self.producers.labels("idle").set(idle)
        self.producers.labels("in_use").set(in_use)

    def producer_initialised(self) -> None:
        self.producer_inits.inc()

    def restored(self, partition: int, entries: int, seconds: float) -> None:
        self.dedup_entries.labels(str(partition)).set(entries)
        self.dedup_restore_seconds.observe(seconds)

    def input_rewound(self) -> None:
        self.input_rewinds.inc()

    def zombie_fenced(self) -> None:
        self.zombies_fenced.inc()

    def transaction_committed(self) -> None:
        """One per transaction: a group of records counts once (records count each)."""
        self._transactions_committed.inc()

    def aborted(self) -> None:
        self.transactions.labels("aborted").inc()
        self.totals.update(aborted=1)

    def retried(self, reason: str) -> None:
        self.retries_by_reason.labels(reason).inc()
        self.totals.update(retries=1)

    def restarted(self, partition: int, cause: str) -> None:
        self.task_restarts.labels(str(partition), cause).inc()
        self.totals.update(restarts=1)

    def commit_failed(self, outcome: str) -> None:
        self.commit_failures.labels(outcome).inc()

    def downloaded(self, seconds: float, nbytes: int) -> None:
        self.download_seconds.observe(seconds)
        self.download_bytes.inc(nbytes)

    def download_resumed(self) -> None:
        self.download_resumes.inc()

    async def watch_loop_lag(self) -> None:
        """Until cancelled: how late each short sleep wakes up is the loop's lag."""
        worst = 0.0
        while True:
            started = time.monotonic()
            await asyncio.sleep(LOOP_LAG_TICK_S)
            lag = max(0.0, time.monotonic() - started - LOOP_LAG_TICK_S)
            self.loop_lag.observe(lag)
            if lag > worst:
                worst = lag
                self.loop_lag_max.set(lag)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def summary_fields(self, partitions: int) -> dict[str, int]:
        """The shutdown summary's counts, also logged as fields for other tools to read."""
        t = self.totals
        return {"committed": t["committed"], "dead_lettered": t["dead_lettered"],
                "outputs": t["outputs"], "aborted": t["aborted"], "retries": t["retries"],
                "restarts": t["restarts"], "partitions_held": partitions}

    def summary(self, partitions: int) -> str:
        fields = self.summary_fields(partitions)
        fields["records committed"] = fields.pop("committed")
        order = ("records committed", "dead_lettered", "outputs", "aborted", "retries",
                 "restarts", "partitions_held")
        return " ".join(f"{name}={fields[name]}" for name in order)
