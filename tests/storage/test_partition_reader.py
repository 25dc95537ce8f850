"""The fan-out's reader (Kafka's wire protocol on Trio sockets) against the test stack's broker."""

from __future__ import annotations

import itertools
import logging
import struct
from functools import partial

import msgspec
import pytest
import trio
import trio.testing
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from confluent_kafka import Producer

from chattrio.config import settings_from_env
from chattrio.fanout import Fanout
from chattrio.metrics import Registry
from chattrio.models import ChatRecord
from chattrio.roomlog import RoomLog
from chattrio.storage import kafka, partition_reader
from chattrio.storage.bridge import open_asyncio_bridge, run_asyncio
from chattrio.storage.kafka import KafkaUnavailable, ReadBatch, partition_of
from chattrio.storage.partition_reader import KafkaIncompatible, PartitionReader, _Cursor, open_partition_reader
from chattrio.transport.sessions import SessionRegistry

_topics = itertools.count()
# Far longer than a record takes to arrive: a fetch that returns with the record was ended by it.
LONG_POLL_MS = 60_000


@pytest.fixture
async def kafka_settings(stack_env, run_prefix):
    """Fresh topics of 2 partitions each, and the asyncio bridge the producer needs."""
    settings = settings_from_env(stack_env, topic_prefix=f"{run_prefix}-reader{next(_topics)}", topic_partitions=2)
    async with open_asyncio_bridge():
        await kafka.ensure_topics(settings)
        yield settings


def _record(room: int, text: str) -> ChatRecord:
    return ChatRecord(f"id-{room}-{text}", room, "alice", "chat", text, None)


async def _produce(settings, *records: ChatRecord) -> None:
    async with kafka.open_chat_producer(settings) as producer:
        for record in records:
            await producer.produce(record)


async def _fetch_texts(reader, count: int, timeout: float = 30.0) -> tuple[list[str], ReadBatch]:
    """Fetch until `count` messages arrived; their texts in order, and the last batch. The
    timeout only guards against a hang: the broker is shared and may be slow to answer."""
    texts: list[str] = []
    with trio.fail_after(timeout):
        while len(texts) < count:
            batch = await reader.fetch(0.5)
            texts += [message.text for _, message in batch.messages]
    return texts, batch


async def test_the_first_assignment_starts_at_the_end_and_new_records_arrive_in_order(kafka_settings):
    await _produce(kafka_settings, _record(1, "before"))
    positions: dict[tuple[str, int], int] = {}
    async with open_partition_reader(kafka_settings) as reader:
        assert await reader.assign_all(positions) == 6  # 2 partitions of each of the 3 topics
        await _produce(kafka_settings, *(_record(1, f"m{i}") for i in range(5)))
        texts, batch = await _fetch_texts(reader, 5)
    assert texts == [f"m{i}" for i in range(5)]
    partition = partition_of(1, 2)
    assert batch.positions[(kafka_settings.messages_topic, partition)] == 6  # "before" was offset 0
    assert positions[(kafka_settings.messages_topic, partition)] == 1  # where reading started


async def test_a_record_ends_the_long_poll_at_once(kafka_settings, monkeypatch):
    """The fetch may wait at the broker for a minute: the record, not the long poll, ends it."""
    monkeypatch.setattr(partition_reader, "FETCH_LONG_POLL_MS", LONG_POLL_MS)
    received = []
    async with open_partition_reader(kafka_settings) as reader, kafka.open_chat_producer(kafka_settings) as producer:
        await reader.assign_all({})
        await producer.produce(_record(2, "warm-up"))  # the producer's first send sets it up
        await _fetch_texts(reader, 1)

        async def fetch() -> None:
            received.append(await reader.fetch(LONG_POLL_MS / 1000))

        # A hang guard, not a speed bound: only a fetch the record did not end gets anywhere near it.
        with trio.fail_after(LONG_POLL_MS / 1000 / 2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                await trio.testing.wait_all_tasks_blocked()  # the request is sent: the fetch waits at the broker
                await producer.produce(_record(2, "hello"))
    assert [m.text for _, m in received[0].messages] == ["hello"]


async def test_a_fetch_cancelled_while_the_broker_holds_it_leaves_no_answer_behind(kafka_settings, monkeypatch, caplog):
    """The broker still answers a fetch whose caller was cancelled: the next fetch must not take
    that answer for its own."""
    monkeypatch.setattr(partition_reader, "FETCH_LONG_POLL_MS", LONG_POLL_MS)
    async with open_partition_reader(kafka_settings) as reader, kafka.open_chat_producer(kafka_settings) as producer:
        await reader.assign_all({})
        await producer.produce(_record(2, "warm-up"))
        await _fetch_texts(reader, 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.fetch, LONG_POLL_MS / 1000)
            await trio.testing.wait_all_tasks_blocked()  # the request is sent: the fetch waits at the broker
            nursery.cancel_scope.cancel()
        await producer.produce(_record(2, "after"))  # ends the cancelled fetch's long poll at the broker
        with caplog.at_level(logging.WARNING, logger="chattrio.storage.partition_reader"):
            with trio.fail_after(LONG_POLL_MS / 1000 / 2):  # a hang guard: "after" is there already
                batch = await reader.fetch(LONG_POLL_MS / 1000)
    assert [m.text for _, m in batch.messages] == ["after"]
    assert "fan-out fetch failed" not in caplog.text


async def test_known_positions_are_kept_and_new_partitions_are_read_from_their_beginning(kafka_settings):
    positions: dict[tuple[str, int], int] = {}
    async with open_partition_reader(kafka_settings) as reader:
        await reader.assign_all(positions)
    room_in_new_partition = next(room for room in range(1, 100) if partition_of(room, 3) == 2)
    room_in_old_partition = next(room for room in range(1, 100) if partition_of(room, 3) == partition_of(room, 2))
    await _produce(kafka_settings, _record(room_in_old_partition, "while away"))

    async def add_partition() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_settings.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_partitions({kafka_settings.messages_topic: NewPartitions(3)})
        finally:
            await admin.close()

    await run_asyncio(add_partition)
    await _produce(kafka_settings, _record(room_in_new_partition, "in the new partition"))
    async with open_partition_reader(kafka_settings) as reader:
        with trio.fail_after(10):
            while await reader.assign_all(positions) < 7:  # the new partition may take a moment
                await trio.sleep(0.2)
        texts, _ = await _fetch_texts(reader, 2)
    assert sorted(texts) == ["in the new partition", "while away"]
    assert positions[(kafka_settings.messages_topic, 2)] == 0


async def test_lag_counts_the_records_not_fetched_yet(kafka_settings):
    async with open_partition_reader(kafka_settings) as reader:
        await reader.assign_all({})
        assert await reader.lag(-1) == 0
        await _produce(kafka_settings, *(_record(room, "x") for room in range(1, 8)))
        assert await reader.lag(-1) == 7
        await _fetch_texts(reader, 7)
        assert await reader.lag(-1) == 0


async def test_a_position_outside_the_log_reads_on_from_the_oldest_record(kafka_settings, caplog):
    await _produce(kafka_settings, _record(3, "kept"))
    partition = partition_of(3, 2)
    beyond = {(kafka_settings.messages_topic, p): 1_000 for p in range(2)}
    async with open_partition_reader(kafka_settings) as reader:
        await reader.assign_all(beyond)
        with caplog.at_level(logging.WARNING, logger="chattrio.storage.partition_reader"):
            texts, batch = await _fetch_texts(reader, 1)
    assert texts == ["kept"]
    assert batch.positions[(kafka_settings.messages_topic, partition)] == 1
    assert "out of range" in caplog.text


async def test_an_undecodable_record_is_skipped_and_the_next_one_is_delivered(kafka_settings, caplog):
    async with open_partition_reader(kafka_settings) as reader:
        await reader.assign_all({})
        raw = Producer({"bootstrap.servers": kafka_settings.kafka_bootstrap, "partitioner": "murmur2_random"})
        raw.produce(kafka_settings.messages_topic, b"not json", key=b"4")
        await trio.to_thread.run_sync(raw.flush, 10)
        await _produce(kafka_settings, _record(4, "fine"))
        with caplog.at_level(logging.WARNING, logger="chattrio.storage.kafka"):
            texts, batch = await _fetch_texts(reader, 1)
    assert texts == ["fine"]
    assert batch.positions[(kafka_settings.messages_topic, partition_of(4, 2))] == 2
    assert "skipped undecodable record" in caplog.text


async def test_an_unreachable_broker_is_an_error_at_assignment(stack_env, run_prefix):
    settings = settings_from_env(stack_env, topic_prefix=f"{run_prefix}-nobroker", kafka_bootstrap="127.0.0.1:1")
    async with open_partition_reader(settings) as reader:
        with pytest.raises(KafkaUnavailable):
            await reader.assign_all({})


async def test_the_first_assignment_waits_for_topics_being_created(stack_env, run_prefix):
    """On a fresh cluster a node's reader can ask for metadata before the topics another node
    (or its own start) is creating are in it. Assigning nothing then started them 30 s later from
    their end, and the messages sent in between never reached the node's sessions."""
    settings = settings_from_env(stack_env, topic_prefix=f"{run_prefix}-creating{next(_topics)}", topic_partitions=2)
    assigned: list[int] = []
    async with open_asyncio_bridge(), open_partition_reader(settings) as reader:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _assign_into(reader, assigned))
            await kafka.ensure_topics(settings)
        assert assigned == [6]  # the 3 topics, 2 partitions each


async def _assign_into(reader: PartitionReader, assigned: list[int]) -> None:
    assigned.append(await reader.assign_all({}))


# Parsing fetch responses: pure logic on responses built here, for the paths one local broker
# does not produce (a moved leader, aborted transactions, an unexpected error).


def _record_batch(base_offset: int, texts: list[str]) -> bytes:
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for delta, text in enumerate(texts):
        builder.append(delta, 1_700_000_000_000, b"9", msgspec.json.encode(_record(9, text)), [])
    batch = builder.build()
    struct.pack_into(">q", batch, 0, base_offset)  # the broker's offset; the CRC does not cover it
    return bytes(batch)


def _fetch_response(topic: str, partitions: list[tuple[int, int, int, bytes]]) -> bytes:
    """(partition, error, aborted transactions, records) in Fetch v10's layout, after the correlation id."""
    parts = [
        struct.pack(">ihii", 0, 0, 0, 1),
        struct.pack(">h", len(topic)),
        topic.encode(),
        struct.pack(">i", len(partitions)),
    ]
    for partition, error, aborted, records in partitions:
        parts.append(struct.pack(">ihqqqi", partition, error, 100, 100, 0, aborted))
        parts += [struct.pack(">qq", 7, 0)] * aborted
        parts.append(struct.pack(">i", len(records)) + records)
    return b"".join(parts)


@pytest.fixture
async def offline_reader():
    settings = settings_from_env({}, topic_prefix="offline")
    async with trio.open_nursery() as nursery:
        reader = PartitionReader(settings, nursery)
        reader._positions = {(settings.messages_topic, p): 5 for p in range(3)}
        yield reader, settings.messages_topic


def _parse(reader: PartitionReader, response: bytes) -> ReadBatch:
    batch = ReadBatch([], [], {})
    reader._parse_fetch(_Cursor(response, 0), batch)
    return batch


async def test_records_after_aborted_transactions_and_below_the_position(offline_reader):
    reader, topic = offline_reader
    response = _fetch_response(
        topic,
        [
            (0, 0, 2, _record_batch(3, ["three", "four", "five", "six"])),  # fetched from 5: 3 and 4 are old
            (1, 0, 0, b""),
        ],
    )
    batch = _parse(reader, response)
    assert [(p, m.text, m.seq) for p, m in batch.messages] == [(0, "five", 5), (0, "six", 6)]
    assert batch.positions == {(topic, 0): 7}
    assert reader._positions[(topic, 0)] == 7 and reader._positions[(topic, 1)] == 5


async def test_a_moved_leader_asks_for_metadata_and_keeps_the_other_partitions(offline_reader):
    reader, topic = offline_reader
    response = _fetch_response(topic, [(0, 6, 0, b""), (1, 0, 0, _record_batch(5, ["hello"]))])
    batch = _parse(reader, response)
    assert [m.text for _, m in batch.messages] == ["hello"]
    assert reader._metadata_stale
    assert reader._positions[(topic, 0)] == 5


async def test_an_unexpected_partition_error_is_kafka_unavailable(offline_reader):
    reader, topic = offline_reader
    with pytest.raises(KafkaUnavailable, match="error 87"):
        _parse(reader, _fetch_response(topic, [(2, 87, 0, b"")]))


async def test_a_corrupt_batch_is_kafka_unavailable(offline_reader):
    reader, topic = offline_reader
    batch = bytearray(_record_batch(5, ["hello"]))
    batch[-3] ^= 0xFF  # inside the record, covered by the CRC
    with pytest.raises(KafkaUnavailable, match="corrupt"):
        _parse(reader, _fetch_response(topic, [(0, 0, 0, bytes(batch))]))


async def test_the_real_broker_serves_the_versions_the_reader_speaks(kafka_settings):
    async with open_partition_reader(kafka_settings) as reader:
        await reader.check_versions()


async def _old_broker(stream: trio.SocketStream) -> None:
    """Answers one ApiVersions request as a broker that serves Fetch only up to v4."""
    data = b""
    while len(data) < 4 or len(data) < 4 + struct.unpack_from(">i", data)[0]:
        data += await stream.receive_some(1024)
    correlation = struct.unpack_from(">i", data, 8)[0]
    served = [(1, 4, 4), (2, 1, 7), (3, 1, 12), (18, 0, 3)]  # Fetch, ListOffsets, Metadata, ApiVersions
    body = struct.pack(">ihi", correlation, 0, len(served)) + b"".join(struct.pack(">hhh", *v) for v in served)
    await stream.send_all(struct.pack(">i", len(body)) + body)


async def test_a_broker_without_the_fetch_version_is_refused_with_a_clear_error(nursery):
    listeners = await nursery.start(partial(trio.serve_tcp, _old_broker, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    settings = settings_from_env({}, kafka_bootstrap=f"127.0.0.1:{port}")
    async with open_partition_reader(settings) as reader:
        with pytest.raises(KafkaIncompatible, match=r"request 1 version 10 \(it serves 4-4\)"):
            await reader.check_versions()


async def test_an_idle_fanout_asks_the_broker_to_hold_its_fetch_for_the_whole_long_poll(kafka_settings, monkeypatch):
    """Each fetch an idle node sends wakes it and the broker: the fan-out must not cut the long
    poll short (a record ends it anyway)."""
    waits: list[int] = []
    fetch_request = PartitionReader._fetch_request

    def recording(self, partitions, wait_ms):
        waits.append(wait_ms)
        return fetch_request(self, partitions, wait_ms)

    monkeypatch.setattr(PartitionReader, "_fetch_request", recording)
    fan = Fanout(kafka_settings, SessionRegistry(), RoomLog(kafka_settings.messages_topic), None, Registry())
    async with trio.open_nursery() as nursery:
        await nursery.start(fan.run)
        with trio.fail_after(30):
            while not waits:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert waits[0] == kafka.FETCH_LONG_POLL_MS >= 5_000
