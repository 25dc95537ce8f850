"""The fan-out's reader on three brokers: it follows a partition's leader when that broker dies."""

from __future__ import annotations

import uuid

import trio
from ha_helpers import MEMBER_START_TIMEOUT, ha, ha_env, kafka_leader, requires_ha  # noqa: F401 - ha_env is a fixture

from chattrio.config import settings_from_env
from chattrio.models import ChatRecord
from chattrio.storage import kafka
from chattrio.storage.bridge import open_asyncio_bridge
from chattrio.storage.kafka import partition_of
from chattrio.storage.partition_reader import open_partition_reader

pytestmark = requires_ha

PARTITIONS = 2
ROOM = 7
# Kafka moves a dead broker's leaderships once its broker session (9 s) expires.
FOLLOW_TIMEOUT = 90.0


def _record(text: str) -> ChatRecord:
    return ChatRecord(f"id-{text}", ROOM, "alice", "chat", text, None)


async def test_the_reader_follows_a_partition_leader_that_dies(ha_env):
    settings = settings_from_env(
        ha_env, topic_prefix=f"ha-reader-{uuid.uuid4().hex[:8]}", topic_partitions=PARTITIONS, topic_replication=3
    )
    partition = partition_of(ROOM, PARTITIONS)
    async with open_asyncio_bridge():
        await kafka.ensure_topics(settings)
        leader = kafka_leader(settings.kafka_bootstrap, settings.messages_topic, partition)
        async with open_partition_reader(settings) as reader, kafka.open_chat_producer(settings) as producer:
            await reader.assign_all({})
            await producer.produce(_record("before"))
            assert await _texts(reader, 1) == ["before"]

            await trio.to_thread.run_sync(ha, "kill", leader)
            try:
                # Produced once a new leader took over (the producer retries until then).
                with trio.fail_after(FOLLOW_TIMEOUT):
                    while True:
                        try:
                            await producer.produce(_record("after"))
                            break
                        except kafka.KafkaUnavailable:
                            continue
                # A produce refused while the leader moved may have been written all the same, so
                # "after" can come twice (the fan-out drops the copy by its message id).
                assert set(await _texts(reader, 1)) == {"after"}
                assert kafka_leader(settings.kafka_bootstrap, settings.messages_topic, partition) != leader
            finally:
                with trio.CancelScope(shield=True):  # the next tests need all three brokers
                    await trio.to_thread.run_sync(lambda: ha("start", leader, timeout=MEMBER_START_TIMEOUT))


async def _texts(reader, count: int) -> list[str]:
    """Fetch until `count` messages arrived: a fetch that raises fails the test."""
    texts: list[str] = []
    with trio.fail_after(FOLLOW_TIMEOUT):
        while len(texts) < count:
            batch = await reader.fetch(0.5)
            texts += [message.text for _, message in batch.messages]
    return texts
