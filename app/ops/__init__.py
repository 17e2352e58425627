"""The service's own operations: HTTP probes and metrics, counts, logs, signals."""
