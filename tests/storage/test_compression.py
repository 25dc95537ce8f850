"""Compressed record batches: both readers decode every codec Kafka offers.

A topic whose `compression.type` differs from the producer's makes the broker recompress what
it stores, so each test sets the codec on the topics and produces with the node's own producer
(uncompressed): the batches the readers fetch are then compressed by the broker itself.
"""

from __future__ import annotations

import itertools

import pytest
import trio
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from chattrio.config import settings_from_env
from chattrio.models import ChatRecord
from chattrio.storage import kafka
from chattrio.storage.bridge import open_asyncio_bridge, run_asyncio
from chattrio.storage.partition_reader import open_partition_reader

CODECS = ("gzip", "snappy", "lz4", "zstd")
_topics = itertools.count()


async def _create_compressed_topics(settings, codec: str) -> None:
    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(name, 1, 1, topic_configs={"compression.type": codec})
                    for name in (settings.messages_topic, settings.events_topic, settings.typing_topic)
                ]
            )
        finally:
            await admin.close()

    await run_asyncio(create)


@pytest.fixture(params=CODECS)
async def compressed_settings(request, stack_env, run_prefix):
    settings = settings_from_env(
        stack_env, topic_prefix=f"{run_prefix}-{request.param}{next(_topics)}", topic_partitions=1
    )
    async with open_asyncio_bridge():
        await _create_compressed_topics(settings, request.param)
        texts = [f"{request.param} message {i}" for i in range(5)]
        async with kafka.open_chat_producer(settings) as producer:
            for i, text in enumerate(texts):
                await producer.produce(ChatRecord(f"id-{request.param}-{i}", 1, "alice", "chat", text, None))
        yield settings, texts


async def _texts_of(reader, count: int) -> list[str]:
    texts: list[str] = []
    with trio.fail_after(30):
        while len(texts) < count:
            batch = await reader.fetch(0.5)
            texts += [message.text for _, message in batch.messages]
    return texts


async def test_the_fanout_reader_decodes_a_compressed_batch(compressed_settings):
    settings, texts = compressed_settings
    async with open_partition_reader(settings) as reader:
        await reader.assign_all({(settings.messages_topic, 0): 0, (settings.events_topic, 0): 0})
        assert await _texts_of(reader, len(texts)) == texts


async def test_the_persistence_group_decodes_a_compressed_batch(compressed_settings):
    settings, texts = compressed_settings
    async with kafka.open_topic_reader(settings, group_id=f"{settings.topic_prefix}-group") as reader:
        assert await _texts_of(reader, len(texts)) == texts
