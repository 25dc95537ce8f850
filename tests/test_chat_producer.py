"""ChatProducer: librdkafka's delivery reports, which arrive on a polling thread, wake the right
senders in Trio. The client is a fake here (the settling is pure logic); the real broker is in
test_a_room_s_messages_go_to_the_partition_partition_of_names and tests/test_outages.py."""

from __future__ import annotations

import threading

import pytest
import trio
from confluent_kafka import KafkaError

from chattrio.config import Settings, settings_from_env
from chattrio.models import ChatRecord, chat_record_decoder
from chattrio.storage import kafka
from chattrio.storage.bridge import open_asyncio_bridge


class FakeMessage:
    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000 + self._offset)


class FakeProducer:
    """Records what is produced; `deliver` queues the reports that the next poll() serves."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes, bytes]] = []
        self._callbacks: list = []
        self._queued: list = []
        self._lock = threading.Lock()
        self.refuse = False

    def produce(self, topic, value, key, on_delivery):
        if self.refuse:
            raise BufferError("Local: Queue full")
        self.produced.append((topic, value, key))
        self._callbacks.append(on_delivery)

    def deliver(self, index: int, error: KafkaError | None = None) -> None:
        with self._lock:
            self._queued.append((self._callbacks[index], error, FakeMessage(3, 100 + index)))

    def poll(self, timeout: float) -> int:
        with self._lock:
            queued, self._queued = self._queued, []
        for callback, error, message in queued:
            callback(error, message)
        if not queued:
            threading.Event().wait(min(timeout, 0.01))
        return len(queued)

    def flush(self, timeout: float) -> int:
        return 0


@pytest.fixture
def client(monkeypatch) -> FakeProducer:
    fake = FakeProducer()
    monkeypatch.setattr(kafka, "Producer", lambda config: fake)
    return fake


def _record(n: int) -> ChatRecord:
    return ChatRecord(f"id-{n}", n, "alice", "chat", f"text {n}", None)


async def test_each_sender_gets_its_own_delivery_report(client):
    results: dict[int, kafka.Produced] = {}

    async def send(n: int) -> None:
        results[n] = await chat.produce(_record(n))

    async with kafka.open_chat_producer(Settings()) as chat, trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(send, n)
        await trio.testing.wait_all_tasks_blocked()
        produced = {
            chat_record_decoder.decode(value).room_id: (index, key)
            for index, (_, value, key) in enumerate(client.produced)
        }
        assert {room: key for room, (_, key) in produced.items()} == {0: b"0", 1: b"1", 2: b"2"}  # keyed by room
        for index in (2, 0, 1):  # reports may come in any order
            client.deliver(index)
    assert {n: (r.partition, r.offset) for n, r in results.items()} == {
        room: (3, 100 + index) for room, (index, _) in produced.items()
    }


async def test_a_failed_delivery_is_kafka_unavailable(client):
    failures: list[kafka.KafkaUnavailable] = []

    async def send() -> None:
        try:
            await chat.produce(_record(1))
        except kafka.KafkaUnavailable as exc:
            failures.append(exc)

    async with kafka.open_chat_producer(Settings()) as chat, trio.open_nursery() as nursery:
        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        client.deliver(0, KafkaError(KafkaError._MSG_TIMED_OUT, "Local: Message timed out"))
    assert len(failures) == 1 and "Message timed out" in str(failures[0])


async def test_a_full_queue_is_refused_at_once(client):
    client.refuse = True
    async with kafka.open_chat_producer(Settings()) as chat:
        # Refused by librdkafka, not timed out waiting for a delivery report that never comes.
        with pytest.raises(kafka.KafkaUnavailable, match="Queue full"):
            await chat.produce(_record(1))


async def test_a_room_s_messages_go_to_the_partition_partition_of_names(stack_env, run_prefix):
    """The fan-out's resume bookkeeping (RoomLog.passed) relies on this agreement."""
    settings = settings_from_env(stack_env, topic_prefix=f"{run_prefix}-partitions", topic_partitions=4)
    async with open_asyncio_bridge():
        await kafka.ensure_topics(settings)
        async with kafka.open_chat_producer(settings) as chat:
            for room_id in range(1, 41):
                produced = await chat.produce(_record(room_id))
                assert produced.partition == kafka.partition_of(room_id, 4), room_id


async def test_enqueue_hands_records_over_in_order_without_waiting_for_their_reports(client):
    async with kafka.open_chat_producer(Settings()) as chat:
        pending = [chat.enqueue(_record(n)) for n in range(3)]
        assert [chat_record_decoder.decode(value).room_id for _, value, _ in client.produced] == [0, 1, 2]
        for index in (2, 0, 1):
            client.deliver(index)
        offsets = [(await each.wait()).offset for each in pending]
    assert offsets == [100, 101, 102]


async def test_a_full_queue_refuses_enqueue_at_once(client):
    client.refuse = True
    async with kafka.open_chat_producer(Settings()) as chat:
        with pytest.raises(kafka.KafkaUnavailable, match="Queue full"):
            chat.enqueue(_record(1))


async def test_a_record_never_reported_fails_at_its_deadline_and_the_next_is_still_answered(client, monkeypatch):
    monkeypatch.setattr(kafka, "REPORT_DEADLINE", 0.3)
    async with kafka.open_chat_producer(Settings()) as chat:
        lost, next_one = chat.enqueue(_record(1)), chat.enqueue(_record(2))
        client.deliver(1)
        assert (await next_one.wait()).offset == 101
        with pytest.raises(kafka.KafkaUnavailable, match="no delivery report within 0.3s"):
            await lost.wait()


async def test_records_unreported_when_the_producer_closes_are_failed(client):
    async with kafka.open_chat_producer(Settings()) as chat:
        pending = chat.enqueue(_record(1))
        answers: list[kafka.PendingSend] = []
        pending.when_settled(answers.append)
    assert answers == [pending] and "producer closed" in str(pending.error)


def test_a_failing_callback_does_not_keep_the_others_from_their_answer(caplog):
    pending = kafka.PendingSend()
    answered: list[kafka.PendingSend] = []

    def broken(_: kafka.PendingSend) -> None:
        raise RuntimeError("answer failed")

    pending.when_settled(broken)
    pending.when_settled(answered.append)
    pending.deliver(kafka.Produced(3, 7, 1_700_000_000_000))
    assert answered == [pending] and pending.produced().offset == 7
    assert "a delivery callback failed" in caplog.text
