"""Print "BROKER_ID PARTITIONS_LED" per broker of a Kafka cluster (for scripts/ha.sh status)."""

import collections
import sys

from confluent_kafka.admin import AdminClient

METADATA_TIMEOUT = 5.0


def main(bootstrap: str) -> int:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=METADATA_TIMEOUT)
    leads = collections.Counter({broker: 0 for broker in metadata.brokers})
    for topic in metadata.topics.values():
        for partition in topic.partitions.values():
            if partition.leader >= 0:
                leads[partition.leader] += 1
    for broker, count in sorted(leads.items()):
        print(broker, count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
