"""The Kafka side of the service: what it adds to aiokafka (``protocol``)."""
