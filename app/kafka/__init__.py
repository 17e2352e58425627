"""Kafka: the clients, the committer, and the transaction protocol aiokafka lacks."""
