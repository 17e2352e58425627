"""Helpers the tests, the chaos suite, the benchmarks and the demo share: the local
Kafka launcher (local_kafka, local_cluster; standard library only), topics and
records (kafka_io), a local HTTP file server with fault injection (fileserver), and
child processes such as ``python -m app`` (proc). Imported as ``tools.<module>``.
"""
