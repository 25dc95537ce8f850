"""Kafka through aiokafka: topic set-up, the batched chat producer, the two kinds of readers."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import msgspec
import trio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    OutOfOrderSequenceNumber,
    RebalanceInProgressError,
    TopicAlreadyExistsError,
    UnknownMemberIdError,
    UnknownProducerId,
)

from chattrio.config import Settings
from chattrio.models import ChatRecord, DomainEvent, Message, chat_record_decoder, chat_record_encoder, event_decoder
from chattrio.storage.bridge import AsyncioCancelled, run_asyncio
from chattrio.storage.postgres import OutboxRow

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
PRODUCE_TIMEOUT = 5.0
PRODUCE_QUEUE = 10_000
PRODUCE_BATCH = 2_000
FETCH_MAX_RECORDS = 5_000
# An idle reader's fetch waits this long on the broker; a record ends the wait at once.
FETCH_LONG_POLL_MS = 500
METADATA_MAX_AGE_MS = 10_000


# The broker lost this idempotent producer's sequence state (it restarted): aiokafka keeps failing
# every send with these, and only a producer with a new id recovers.
_PRODUCER_STATE_LOST = (OutOfOrderSequenceNumber, UnknownProducerId)

_REBALANCED = (CommitFailedError, IllegalGenerationError, RebalanceInProgressError, UnknownMemberIdError)


class KafkaUnavailable(Exception):
    """The broker did not acknowledge in time; the caller answers an error and may retry."""


@dataclasses.dataclass(frozen=True)
class Produced:
    partition: int
    offset: int
    timestamp: int


@dataclasses.dataclass
class ReadBatch:
    """What one fetch returned, decoded; `positions` are the next offsets to read (or commit)."""

    messages: list[tuple[int, Message]]  # (partition, message)
    events: list[DomainEvent]
    positions: dict[tuple[str, int], int]


def _room_key(room_id: int) -> bytes:
    return str(room_id).encode()


_partitioner = DefaultPartitioner()


def partition_of(room_id: int, partition_count: int) -> int:
    """The partition the producer sends a room's messages to (Kafka's default key hashing)."""
    partitions = list(range(partition_count))
    return _partitioner(_room_key(room_id), partitions, partitions)


async def ensure_topics(settings: Settings) -> None:
    """Create the topics if missing, with the configured partitions and replication."""

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            wanted = [
                NewTopic(name, settings.topic_partitions, settings.topic_replication)
                for name in (settings.messages_topic, settings.events_topic)
                if name not in existing
            ]
            if wanted:
                try:
                    await admin.create_topics(wanted)
                except TopicAlreadyExistsError:
                    pass  # another node won the race
                log.info("created topics", extra={"topics": [t.name for t in wanted]})
        finally:
            await admin.close()

    await _bounded(create)


async def _bounded(fn, *args, timeout: float = CONNECT_TIMEOUT):
    try:
        with trio.fail_after(timeout):
            return await run_asyncio(fn, *args)
    except (KafkaError, OSError, AsyncioCancelled, trio.TooSlowError) as exc:
        raise KafkaUnavailable(f"Kafka unavailable: {exc!r}") from exc


async def _start_producer(settings: Settings) -> AIOKafkaProducer:
    """An asyncio coroutine: the producer is built on the asyncio thread, bound to its loop."""
    producer = _new_producer(settings)
    await producer.start()
    return producer


def _new_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=1,
        max_batch_size=256 * 1024,
        request_timeout_ms=int(PRODUCE_TIMEOUT * 1000),
        metadata_max_age_ms=METADATA_MAX_AGE_MS,
    )


@dataclasses.dataclass
class _PendingSend:
    record: ChatRecord
    done: trio.Event = dataclasses.field(default_factory=trio.Event)
    result: Produced | None = None
    error: BaseException | None = None


class ChatProducer:
    """Produces chat records keyed by room; concurrent sends share one bridge crossing."""

    def __init__(self, producer: AIOKafkaProducer, settings: Settings) -> None:
        self._producer = producer
        self._settings = settings
        self._topic = settings.messages_topic
        self._events_topic = settings.events_topic
        self._needs_new_producer = False
        self._send_channel, self._receive_channel = trio.open_memory_channel[_PendingSend](PRODUCE_QUEUE)

    async def produce(self, record: ChatRecord) -> Produced:
        pending = _PendingSend(record)
        with trio.move_on_after(PRODUCE_TIMEOUT):
            await self._send_channel.send(pending)
            await pending.done.wait()
        if pending.result is not None:
            return pending.result
        raise KafkaUnavailable(f"Kafka did not acknowledge within {PRODUCE_TIMEOUT:g}s: {pending.error!r}")

    async def run_batches(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for first in self._receive_channel:
            batch = [first]
            while len(batch) < PRODUCE_BATCH:
                try:
                    batch.append(self._receive_channel.receive_nowait())
                except trio.WouldBlock:
                    break
            await self._send_batch(batch)

    async def _send_batch(self, batch: list[_PendingSend]) -> None:
        if self._needs_new_producer:
            try:
                await self._renew_producer()
            except KafkaUnavailable as exc:
                self._settle(batch, [exc] * len(batch))
                return

        async def send_all() -> list:
            futures = [
                await self._producer.send(
                    self._topic, chat_record_encoder.encode(p.record), key=_room_key(p.record.room_id)
                )
                for p in batch
            ]
            return await asyncio.gather(*futures, return_exceptions=True)

        results: list = []
        try:
            with trio.fail_after(PRODUCE_TIMEOUT * 2):
                results = await run_asyncio(send_all)
        except (KafkaError, OSError, AsyncioCancelled, trio.TooSlowError) as exc:
            results = [exc] * len(batch)
        self._settle(batch, results)

    def _settle(self, batch: list[_PendingSend], results: list) -> None:
        for pending, outcome in zip(batch, results):
            if isinstance(outcome, BaseException):
                pending.error = outcome
            else:
                pending.result = Produced(outcome.partition, outcome.offset, outcome.timestamp)
            pending.done.set()
        if any(isinstance(outcome, _PRODUCER_STATE_LOST) for outcome in results):
            self._needs_new_producer = True

    async def _renew_producer(self) -> None:
        log.warning("the broker lost the producer's state: starting a new producer")
        await _close_quietly(self._producer.stop)
        self._producer = await _bounded(_start_producer, self._settings)
        self._needs_new_producer = False

    async def aclose(self) -> None:
        await _close_quietly(self._producer.stop)  # flushes what is buffered

    async def publish_events(self, rows: Sequence[OutboxRow]) -> None:
        """An asyncio coroutine (called inside the outbox transaction): publish and wait for acks."""
        futures = [
            await self._producer.send(self._events_topic, row.payload, key=row.key.encode()) for row in rows
        ]
        await asyncio.gather(*futures)


@asynccontextmanager
async def open_chat_producer(settings: Settings) -> AsyncIterator[ChatProducer]:
    chat = ChatProducer(await _bounded(_start_producer, settings), settings)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(chat.run_batches)
            yield chat
            nursery.cancel_scope.cancel()
    finally:
        await chat.aclose()


def _decode(records_by_partition: dict, positions: dict, messages: list, events: list, topics: tuple[str, str]):
    messages_topic, events_topic = topics
    for tp, records in records_by_partition.items():
        for record in records:
            positions[(tp.topic, tp.partition)] = record.offset + 1
            try:
                if tp.topic == messages_topic:
                    chat = chat_record_decoder.decode(record.value)
                    messages.append((tp.partition, chat.to_message(record.offset, record.timestamp)))
                elif tp.topic == events_topic:
                    events.append(event_decoder.decode(record.value))
            except msgspec.DecodeError:
                log.warning(
                    "skipped undecodable record",
                    extra={"topic": tp.topic, "partition": tp.partition, "offset": record.offset},
                )


class TopicReader:
    """A consumer of both topics; `fetch` crosses the bridge once per batch."""

    def __init__(self, consumer: AIOKafkaConsumer, settings: Settings) -> None:
        self._consumer = consumer
        self._topics = (settings.messages_topic, settings.events_topic)

    async def fetch(self, timeout: float) -> ReadBatch:
        async def getmany():
            return await self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=FETCH_MAX_RECORDS)

        records = await _bounded(getmany, timeout=timeout + CONNECT_TIMEOUT)
        batch = ReadBatch([], [], {})
        _decode(records, batch.positions, batch.messages, batch.events, self._topics)
        return batch

    async def commit(self, positions: dict[tuple[str, int], int]) -> bool:
        """Commit group offsets; False when a rebalance took the partitions away first.

        That is not an error: the new owner reads the batch again and storing is idempotent.
        Restarting the consumer instead would trigger yet another rebalance.
        """
        offsets = {TopicPartition(topic, partition): offset for (topic, partition), offset in positions.items()}
        try:
            await _bounded(self._consumer.commit, offsets)
        except KafkaUnavailable as exc:
            if not isinstance(exc.__cause__, _REBALANCED):
                raise
            log.info("offset commit skipped by a rebalance: %r", exc.__cause__)
            return False
        return True

    async def assign_all(self, positions: dict[tuple[str, int], int]) -> int:
        """Assign every partition of both topics (no consumer group), keeping known positions.

        New partitions are read from their beginning, known ones from `positions`, and the rest
        (first start) from the end. Returns the number of partitions assigned.
        """

        async def assign() -> int:
            await self._consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(topic, p)
                for topic in self._topics
                for p in sorted(self._consumer.partitions_for_topic(topic) or ())
            ]
            if set(partitions) == self._consumer.assignment():
                return len(partitions)
            first_time = not positions
            self._consumer.assign(partitions)
            for tp in partitions:
                known = positions.get((tp.topic, tp.partition))
                if known is not None:
                    self._consumer.seek(tp, known)
                elif first_time:
                    await self._consumer.seek_to_end(tp)
                else:
                    await self._consumer.seek_to_beginning(tp)
            for tp in partitions:
                positions[(tp.topic, tp.partition)] = await self._consumer.position(tp)
            return len(partitions)

        return await _bounded(assign)

    async def lag(self, last_known: int) -> int:
        """Messages the reader has not fetched yet, over its assigned partitions; `last_known`
        when the broker did not answer (a gauge, not worth restarting a consumer for)."""

        async def compute() -> int:
            assigned = list(self._consumer.assignment())
            if not assigned:
                return 0
            ends = await self._consumer.end_offsets(assigned)
            behind = 0
            for tp in assigned:
                behind += max(0, ends[tp] - await self._consumer.position(tp))
            return behind

        try:
            return await _bounded(compute)
        except KafkaUnavailable as exc:
            log.warning("consumer lag unknown: %s", exc)
            return last_known


@asynccontextmanager
async def open_topic_reader(settings: Settings, group_id: str | None) -> AsyncIterator[TopicReader]:
    """group_id None: an unmanaged reader of every partition (fan-out); else a group member."""

    def new_consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if group_id else "latest",
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            request_timeout_ms=int(CONNECT_TIMEOUT * 1000),
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
            max_poll_records=FETCH_MAX_RECORDS,
            fetch_max_wait_ms=FETCH_LONG_POLL_MS,
            isolation_level="read_uncommitted",
        )

    async def start() -> AIOKafkaConsumer:
        consumer = new_consumer()
        await consumer.start()
        if group_id:
            consumer.subscribe([settings.messages_topic, settings.events_topic])
        return consumer

    consumer = await _bounded(start)
    try:
        yield TopicReader(consumer, settings)
    finally:
        await _close_quietly(consumer.stop)


async def _close_quietly(close) -> None:
    """Closing must finish (shielded, bounded) and must not hide the error that led here."""
    with trio.move_on_after(PRODUCE_TIMEOUT) as scope:
        scope.shield = True
        try:
            await run_asyncio(close)
        except (KafkaError, OSError, AsyncioCancelled) as exc:
            log.warning("closing a Kafka client failed: %r", exc)
