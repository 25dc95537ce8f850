"""Kafka: the chat producer through librdkafka (confluent-kafka); topic set-up and the
persistence group's reader through aiokafka. The fan-out's reader is partition_reader.py.

The producer is librdkafka rather than aiokafka, whose protocol work runs in Python on the
asyncio thread: librdkafka does it in C threads of its own, and acknowledges sooner
(docs/decisions/confluent-kafka-producer.md). The group reader is aiokafka, whose fetches the
caller paces; librdkafka's consumer delivered records up to its long-poll wait late (p50 ~270 ms
at 20 records/s; docs/decisions/group-reader.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec
import trio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    TopicAlreadyExistsError,
    UnknownMemberIdError,
)
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import KafkaException, Producer

from chattrio.config import Settings
from chattrio.models import (
    ChatRecord,
    DeadLetter,
    DomainEvent,
    Message,
    TypingRecord,
    chat_record_decoder,
    chat_record_encoder,
    event_decoder,
    typing_record_decoder,
)
from chattrio.storage.bridge import AsyncioCancelled, run_asyncio
from chattrio.storage.postgres import OutboxRow

if TYPE_CHECKING:
    import confluent_kafka
    from confluent_kafka import KafkaError as DeliveryError  # aiokafka's KafkaError is another

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
PRODUCE_TIMEOUT = 5.0
PRODUCE_QUEUE = 100_000
# How long the delivery-report thread waits in one poll; it also bounds how long it runs on after
# the producer closes.
DELIVERY_POLL = 0.1
# A record with no delivery report this long after its hand-over is failed (librdkafka reports
# each within PRODUCE_TIMEOUT, its message.timeout.ms; this only guards against a lost report).
REPORT_DEADLINE = PRODUCE_TIMEOUT + DELIVERY_POLL * 2
FETCH_MAX_RECORDS = 5_000
# An idle reader's fetch waits this long on the broker; a record ends the wait at once, so the
# wait costs no latency, and a longer one wakes the broker and the node less often when idle.
FETCH_LONG_POLL_MS = 5_000
# aiokafka fetches again for a reader's other partitions once fetched records have waited 0.1 s
# (its `prefetch_backoff`, not a consumer setting). When those partitions are quiet, that fetch
# waits out the whole long poll at the broker, and the busy partitions wait behind it (one fetch
# in flight per broker): a caller 0.1 s late would get records up to 0.5 s late. With this backoff a
# reader fetches only once the caller has taken every record.
PREFETCH_BACKOFF = 3600.0
METADATA_MAX_AGE_MS = 10_000

T = TypeVar("T")

_REBALANCED = (CommitFailedError, IllegalGenerationError, RebalanceInProgressError, UnknownMemberIdError)


class KafkaUnavailable(Exception):
    """The broker did not acknowledge in time; the caller answers an error and may retry."""


class KafkaMisconfigured(Exception):
    """The brokers answer but refuse the node's topics (e.g. a replication factor above the
    number of brokers): the node cannot start."""


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
    undecodable: list[DeadLetter] = dataclasses.field(default_factory=list)
    typing: list[TypingRecord] = dataclasses.field(default_factory=list)


def _room_key(room_id: int) -> bytes:
    return str(room_id).encode()


_partitioner = DefaultPartitioner()


def partition_of(room_id: int, partition_count: int) -> int:
    """The partition the producer sends a room's messages to (Kafka's default key hashing)."""
    partitions = list(range(partition_count))
    partition: int = _partitioner(_room_key(room_id), partitions, partitions)
    return partition


async def ensure_topics(settings: Settings) -> None:
    """Create the topics if missing, with the configured partitions and replication."""

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            wanted = [
                NewTopic(name, settings.topic_partitions, settings.topic_replication, topic_configs=configs)
                for name, configs in _topic_configs(settings).items()
                if name not in existing
            ]
            if wanted:
                try:
                    response = await admin.create_topics(wanted)
                except TopicAlreadyExistsError:
                    return  # another node won the race
                _raise_refused_topics(response.topic_errors, settings)
                created = [error[0] for error in response.topic_errors if error[1] == 0]
                if created:  # the others were created by another node at the same moment
                    log.info("created topics", extra={"topics": created})
        finally:
            await admin.close()

    try:
        await _bounded(create)
    except KafkaUnavailable as exc:
        raise KafkaUnavailable(
            f"no Kafka broker of {settings.kafka_bootstrap!r} (CHATTRIO_KAFKA_BOOTSTRAP) answered: {exc.__cause__!r}"
        ) from exc


def _topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Each topic and the settings it is created with. The typing topic keeps its records only
    briefly: its segments roll as often as they expire, since retention deletes whole segments."""
    typing_ms = str(int(settings.typing_retention_seconds * 1000))
    return {
        settings.messages_topic: {},
        settings.events_topic: {},
        settings.typing_topic: {"retention.ms": typing_ms, "segment.ms": typing_ms},
    }


def _raise_refused_topics(topic_errors: Iterable[tuple[Any, ...]], settings: Settings) -> None:
    """CreateTopics answers an error per topic rather than failing: a topic that was refused
    (other than by a node that created it first) is a configuration the cluster cannot serve."""
    refused = [
        f"{error[0]}: error {error[1]}{f' ({error[2]})' if len(error) > 2 and error[2] else ''}"
        for error in topic_errors
        if error[1] not in (0, TopicAlreadyExistsError.errno)
    ]
    if refused:
        raise KafkaMisconfigured(
            f"Kafka refused to create the topics with {settings.topic_partitions} partitions and replication"
            f" factor {settings.topic_replication} (CHATTRIO_TOPIC_REPLICATION): {'; '.join(refused)}"
        )


async def _bounded(fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = CONNECT_TIMEOUT) -> T:
    try:
        with trio.fail_after(timeout):
            return await run_asyncio(fn, *args)
    except (KafkaError, OSError, AsyncioCancelled, trio.TooSlowError) as exc:
        raise KafkaUnavailable(f"Kafka unavailable: {exc!r}") from exc


def _producer_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "socket.nagle.disable": True,
        "topic.metadata.refresh.interval.ms": METADATA_MAX_AGE_MS,
        "logger": logging.getLogger("chattrio.kafka.producer"),
        "enable.idempotence": True,  # implies acks=all; librdkafka recovers the producer id itself
        "acks": "all",
        "linger.ms": settings.kafka_linger_ms,
        "message.timeout.ms": int(PRODUCE_TIMEOUT * 1000),
        "queue.buffering.max.messages": PRODUCE_QUEUE,
        # The Java client's key hashing, which partition_of computes too.
        "partitioner": "murmur2_random",
    }


class PendingSend:
    """One record handed to the producer, until it is reported delivered or failed.

    Whoever waits registers a callback (`when_settled`), called once, in the Trio thread, when the
    record settles: a waiting SEND costs no task. The producer settles every record it was handed:
    by its delivery report, or as failed at REPORT_DEADLINE after the hand-over (librdkafka reports
    every record within message.timeout.ms; the margin covers the poll). Every waiter, a retried
    SEND joining the first too, gets the same answer.
    """

    __slots__ = ("result", "error", "_callbacks")

    def __init__(self) -> None:
        self.result: Produced | None = None
        self.error: str | None = None
        self._callbacks: list[Callable[[PendingSend], object]] | None = []  # None once settled

    @property
    def settled(self) -> bool:
        return self._callbacks is None

    def when_settled(self, callback: Callable[[PendingSend], object]) -> None:
        if self._callbacks is None:
            callback(self)
        else:
            self._callbacks.append(callback)

    def deliver(self, produced: Produced) -> None:
        self._settle(produced, None)

    def fail(self, reason: str) -> None:
        self._settle(None, reason)

    def _settle(self, result: Produced | None, error: str | None) -> None:
        callbacks = self._callbacks
        if callbacks is None:
            return  # a report after the deadline: the waiters have had their answer
        self.result, self.error, self._callbacks = result, error, None
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                # Callbacks run from trio's run_sync_soon, where an exception would end the node.
                log.exception("a delivery callback failed")

    def produced(self) -> Produced:
        """The broker's acknowledgement of a settled record; KafkaUnavailable when it failed."""
        if self.result is None:
            raise KafkaUnavailable(f"Kafka did not take the record: {self.error}")
        return self.result

    async def wait(self) -> Produced:
        if not self.settled:
            settled = trio.Event()
            self.when_settled(lambda _: settled.set())
            await settled.wait()
        return self.produced()


class ChatProducer:
    """Produces chat records keyed by room through librdkafka, which batches them in C threads.

    `enqueue` hands a record over without blocking; a thread of our own polls librdkafka for
    delivery reports and passes them back to Trio, where the waiting senders are woken. The
    idempotent producer keeps the records of a partition in the order they were handed over, also
    across retries (librdkafka: up to 5 requests in flight per broker, without reordering).
    """

    def __init__(self, producer: Producer, settings: Settings) -> None:
        self._producer = producer
        self._topic = settings.messages_topic
        self._events_topic = settings.events_topic
        self._typing_topic = settings.typing_topic
        # Filled by delivery callbacks, which librdkafka runs inside poll() on the polling thread.
        self._reports: deque[tuple[PendingSend, DeliveryError | None, confluent_kafka.Message]] = deque()
        # Records handed over, with their deadlines (time.monotonic()), in hand-over order and
        # so in deadline order; settled ones leave from the front as reports are settled.
        self._unsettled: deque[tuple[float, PendingSend]] = deque()

    async def produce(self, record: ChatRecord) -> Produced:
        return await self.enqueue(record).wait()

    def enqueue(self, record: ChatRecord) -> PendingSend:
        """Hand the record to librdkafka; KafkaUnavailable at once when it refuses it."""
        pending = PendingSend()
        try:
            self._producer.produce(
                self._topic,
                chat_record_encoder.encode(record),
                key=_room_key(record.room_id),
                on_delivery=partial(self._on_delivery, pending),
            )
        except (BufferError, KafkaException) as exc:
            raise KafkaUnavailable(f"Kafka producer refused the record: {exc!r}") from exc
        self._unsettled.append((time.monotonic() + REPORT_DEADLINE, pending))
        return pending

    def produce_typing(self, record: TypingRecord) -> bool:
        """Hand a typing record to librdkafka without waiting for the broker: a typing signal
        that is lost matters less than a session kept waiting. False when the producer refused it."""
        try:
            self._producer.produce(
                self._typing_topic, chat_record_encoder.encode(record), key=_room_key(record.room_id)
            )
        except (BufferError, KafkaException) as exc:
            log.warning("typing record not produced: %r", exc)
            return False
        return True

    def _on_delivery(
        self, pending: PendingSend, error: DeliveryError | None, message: confluent_kafka.Message
    ) -> None:  # on the polling thread
        self._reports.append((pending, error, message))

    def _settle_reports(self) -> None:
        reports = self._reports
        while reports:
            pending, error, message = reports.popleft()
            partition, offset = message.partition(), message.offset()
            if error is not None:
                pending.fail(str(error))
            elif partition is None or offset is None:
                # librdkafka sets both on every delivered record; a report without them is
                # answered as a failure rather than taking the delivery loop down.
                pending.fail("delivery report without partition or offset")
            else:
                pending.deliver(Produced(partition, offset, message.timestamp()[1]))
        self._fail_overdue()

    def _fail_overdue(self) -> None:
        """Drop settled records from the front of `_unsettled`, failing those past their deadline."""
        unsettled, now = self._unsettled, time.monotonic()
        while unsettled and (unsettled[0][1].settled or unsettled[0][0] <= now):
            unsettled.popleft()[1].fail(f"no delivery report within {REPORT_DEADLINE:g}s")

    def _oldest_overdue(self) -> bool:  # on the polling thread: a look at the front only
        try:
            return self._unsettled[0][0] <= time.monotonic()
        except IndexError:
            return False

    async def run_delivery_reports(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll librdkafka on a worker thread until cancelled; reports, and records past their
        deadline, are settled in Trio."""
        token = trio.lowlevel.current_trio_token()
        stop = threading.Event()

        def poll_until_stopped() -> None:
            while not stop.is_set():
                if (self._producer.poll(DELIVERY_POLL) and self._reports) or self._oldest_overdue():
                    try:
                        token.run_sync_soon(self._settle_reports)
                    except trio.RunFinishedError:
                        return

        task_status.started()
        try:
            await trio.to_thread.run_sync(poll_until_stopped, abandon_on_cancel=True)
        finally:
            stop.set()  # the abandoned thread ends within one poll

    async def aclose(self) -> None:
        """Deliver what is still queued (shielded, bounded), then stop polling."""
        with trio.move_on_after(PRODUCE_TIMEOUT) as scope:
            scope.shield = True
            left = await trio.to_thread.run_sync(self._producer.flush, PRODUCE_TIMEOUT, abandon_on_cancel=True)
            if left:
                log.warning("%d records were not delivered before shutdown", left)
        self._settle_reports()
        for _, pending in self._unsettled:
            pending.fail("the producer closed before the record was reported")
        self._unsettled.clear()

    async def publish_events(self, rows: Sequence[OutboxRow]) -> None:
        """An asyncio coroutine (called inside the outbox transaction): publish and wait for acks."""
        loop = asyncio.get_running_loop()
        futures = []
        for row in rows:
            future = loop.create_future()
            try:
                self._producer.produce(
                    self._events_topic,
                    row.payload,
                    key=row.key.encode(),
                    on_delivery=partial(_resolve_threadsafe, loop, future),
                )
            except (BufferError, KafkaException) as exc:
                raise KafkaUnavailable(f"Kafka producer refused an event: {exc!r}") from exc
            futures.append(future)
        try:
            await asyncio.wait_for(asyncio.gather(*futures), PRODUCE_TIMEOUT + DELIVERY_POLL * 2)
        except (TimeoutError, KafkaException) as exc:
            raise KafkaUnavailable(f"Kafka did not acknowledge the events: {exc!r}") from exc


def _resolve_threadsafe(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[None],
    error: DeliveryError | None,
    _message: confluent_kafka.Message,
) -> None:
    """A delivery callback for an asyncio waiter (it runs on the polling thread)."""

    def resolve() -> None:
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(KafkaException(error))

    loop.call_soon_threadsafe(resolve)


@asynccontextmanager
async def open_chat_producer(settings: Settings) -> AsyncIterator[ChatProducer]:
    chat = ChatProducer(Producer(_producer_config(settings)), settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(chat.run_delivery_reports)
        try:
            yield chat
        finally:
            await chat.aclose()
            nursery.cancel_scope.cancel()


def decode_records(
    topic: str, partition: int, records: Iterable[FetchedRecord], batch: ReadBatch, topics: tuple[str, ...]
) -> None:
    """Decode one partition's records (anything with offset, timestamp and value) into `batch`;
    `topics` are the messages and events topics, then (the fan-out's) the typing topic."""
    messages_topic, events_topic, *typing_topic = topics
    for record in records:
        batch.positions[(topic, partition)] = record.offset + 1
        try:
            if record.value is None:  # a tombstone: nothing we produce, so someone else's mistake
                raise msgspec.DecodeError("record has no value")
            if topic == messages_topic:
                chat = chat_record_decoder.decode(record.value)
                batch.messages.append((partition, chat.to_message(record.offset, record.timestamp)))
            elif topic == events_topic:
                batch.events.append(event_decoder.decode(record.value))
            elif topic in typing_topic:
                batch.typing.append(typing_record_decoder.decode(record.value))
        except msgspec.DecodeError as exc:
            log.warning(
                "skipped undecodable record", extra={"topic": topic, "partition": partition, "offset": record.offset}
            )
            value = None if record.value is None else bytes(record.value)
            batch.undecodable.append(DeadLetter(topic, partition, record.offset, record.timestamp, value, str(exc)))


class FetchedRecord(Protocol):
    """A record as aiokafka's consumer and record batches give it."""

    @property
    def offset(self) -> int: ...

    @property
    def timestamp(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...


class TopicReader:
    """A group member reading both topics; `fetch` crosses the bridge once per batch."""

    def __init__(self, consumer: AIOKafkaConsumer, settings: Settings) -> None:
        self._consumer = consumer
        self._topics = (settings.messages_topic, settings.events_topic)

    async def fetch(self, timeout: float) -> ReadBatch:
        async def getmany() -> dict[TopicPartition, list[FetchedRecord]]:
            fetched: dict[TopicPartition, list[FetchedRecord]] = await self._consumer.getmany(
                timeout_ms=int(timeout * 1000), max_records=FETCH_MAX_RECORDS
            )
            return fetched

        records = await _bounded(getmany, timeout=timeout + CONNECT_TIMEOUT)
        batch = ReadBatch([], [], {})
        for tp, partition_records in records.items():
            decode_records(tp.topic, tp.partition, partition_records, batch, self._topics)
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
async def open_topic_reader(settings: Settings, group_id: str) -> AsyncIterator[TopicReader]:
    """A member of consumer group `group_id`, subscribed to both topics (persistence)."""

    def new_consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
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
        _fetch_only_once_taken(consumer)
        consumer.subscribe([settings.messages_topic, settings.events_topic])
        return consumer

    consumer = await _bounded(start)
    try:
        yield TopicReader(consumer, settings)
    finally:
        await _close_quietly(consumer.stop)


def _fetch_only_once_taken(consumer: AIOKafkaConsumer) -> None:
    """Set PREFETCH_BACKOFF on aiokafka's fetcher: a private attribute, so pyproject.toml pins
    aiokafka's minor version and tests/storage/test_kafka.py fails when an aiokafka stops
    reading it. Refuse to start rather than silently set an attribute nothing reads."""
    fetcher = consumer._fetcher
    if not hasattr(fetcher, "_prefetch_backoff"):
        raise RuntimeError("aiokafka's Fetcher has no _prefetch_backoff any more: see kafka.PREFETCH_BACKOFF")
    fetcher._prefetch_backoff = PREFETCH_BACKOFF


async def _close_quietly(close: Callable[[], Awaitable[None]]) -> None:
    """Closing must finish (shielded, bounded) and must not hide the error that led here."""
    with trio.move_on_after(PRODUCE_TIMEOUT) as scope:
        scope.shield = True
        try:
            await run_asyncio(close)
        except (KafkaError, OSError, AsyncioCancelled) as exc:
            log.warning("closing a Kafka client failed: %r", exc)
