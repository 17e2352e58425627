"""What aiokafka lacks of Kafka's transaction protocol, built on aiokafka itself.

- KIP-447: ``TxnOffsetCommit`` v3+ carries the consumer's generation, member id and
  group instance id, so the group coordinator refuses a zombie's offsets; and
  ``OffsetFetch`` v7 with ``require_stable`` waits out pending transactional offsets.
- ``ApiVersions`` v3: the cluster's finalized features (``transaction.version``).
- Transactions v2 (KIP-890) messages: ``InitProducerId``, ``Produce`` v12, ``EndTxn`` v5.

It subclasses aiokafka's protocol structs and sends through aiokafka's client, and it
reaches into the producer's sender: it is pinned to the one aiokafka version it was
written and tested against, and refuses to import beside any other.
"""

import aiokafka

AIOKAFKA_VERSION = "0.14.0"

if aiokafka.__version__ != AIOKAFKA_VERSION:
    raise ImportError(
        f"app.kafka.protocol extends aiokafka {AIOKAFKA_VERSION} exactly, but aiokafka "
        f"{aiokafka.__version__} is installed: check it against the new version, then "
        "change AIOKAFKA_VERSION")
