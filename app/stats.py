"""Counters for the shutdown summary (and, later, the metrics endpoint)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Stats:
    committed: int = 0        # input records whose outputs were committed
    dead_lettered: int = 0    # input records committed as one DLQ record
    output_records: int = 0   # transactions written to the output topic
    aborted: int = 0          # Kafka transactions aborted (and retried)
    retries: int = 0          # download attempts and transactions tried again
    restarts: int = 0         # partition tasks revived with a new producer

    def summary(self, partitions: int) -> str:
        return (f"records committed={self.committed} dead_lettered={self.dead_lettered} "
                f"outputs={self.output_records} aborted={self.aborted} retries={self.retries} "
                f"restarts={self.restarts} partitions_held={partitions}")
