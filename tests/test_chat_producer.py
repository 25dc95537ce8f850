"""ChatProducer's recovery when the broker loses the idempotent producer's state (a broker
restart): aiokafka fails every later send, so the producer is replaced. The Kafka client is a fake
here; the decision is pure logic (the real outage is tests/test_outages.py)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import OutOfOrderSequenceNumber

from chattrio.config import Settings
from chattrio.models import ChatRecord
from chattrio.storage import kafka
from chattrio.storage.bridge import open_asyncio_bridge


class FakeRecordMetadata:
    def __init__(self, offset: int) -> None:
        self.partition, self.offset, self.timestamp = 0, offset, 0


class FakeProducer:
    """Sends succeed, or fail with OutOfOrderSequenceNumber while `broken`."""

    def __init__(self, broken: bool) -> None:
        self.broken = broken
        self.stopped = False
        self.sent = 0

    async def send(self, topic, value, key):
        future = asyncio.get_running_loop().create_future()
        if self.broken:
            future.set_exception(OutOfOrderSequenceNumber())
        else:
            self.sent += 1
            future.set_result(FakeRecordMetadata(self.sent))
        return future

    async def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def producers(monkeypatch) -> list[FakeProducer]:
    """Every producer the ChatProducer starts; the first one has lost its state on the broker."""
    started: list[FakeProducer] = []

    async def start(settings):
        started.append(FakeProducer(broken=not started))
        return started[-1]

    monkeypatch.setattr(kafka, "_start_producer", start)
    return started


def _record(n: int) -> ChatRecord:
    return ChatRecord(f"id-{n}", 1, "alice", "chat", f"text {n}", None)


async def test_a_producer_whose_state_the_broker_lost_is_replaced(producers):
    async with open_asyncio_bridge(), kafka.open_chat_producer(Settings()) as chat:
        with pytest.raises(kafka.KafkaUnavailable, match="OutOfOrderSequenceNumber"):
            await chat.produce(_record(1))
        produced = await chat.produce(_record(2))  # the client retries: a new producer sends it
    assert produced.offset == 1
    assert len(producers) == 2
    assert producers[0].stopped and producers[1].stopped  # the broken one at once, the new at the end
    assert producers[1].sent == 1


async def test_a_working_producer_is_kept(producers):
    async with open_asyncio_bridge(), kafka.open_chat_producer(Settings()) as chat:
        producers[0].broken = False
        await chat.produce(_record(1))
        assert len(producers) == 1 and not producers[0].stopped
