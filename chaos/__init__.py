"""The chaos suite: exactly once under faults.

Modelled on Apache Kafka's transactions system test (copy input through
transactional copiers while hard- and clean-bouncing the copiers and the broker,
then check one committed copy of each input, in order) with Jepsen-style checks
for lost writes, aborted reads and torn transactions.

    workload.py     deterministic files, and what each input record must produce
    faultyserver.py the local HTTP server that serves them and injects faults
    faults.py       copier processes and the seeded fault scheduler
    logread.py      reading topics back: the client's read_committed view and the raw log
    txnlog.py       pure: the raw log read back, each record's fate by its markers
    checker.py      pure: records in, verdict and counts out
    broken.py       a deliberately wrong copier, to prove the checker can fail
    harness.py      tiers, topics, the paced feeder, the group watcher, copier settings
    runreport.py    what a run reports: plan met, last line, JSON report, exit code
    run.py          ``python -m chaos.run --tier ci|full``: all of it against a private
                    3-node cluster (tools/local_cluster.py; --brokers 1: one broker)
"""
