"""The persistence consumer: a load-balanced group that stores messages and caches events.

Offsets are committed only after PostgreSQL committed the batch; a redelivered batch inserts
nothing twice (unique ids and (room, seq)). Redis is written after PostgreSQL and only as a
cache: a room whose cache write failed is dropped from the cache, so it never has holes.

No record can stop storing: one that does not decode, or that PostgreSQL refuses (its values,
not an outage), goes to the dead_letters table with the reason, and the rest is stored.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import TypeVar

import trio

from chattrio.backoff import Backoff
from chattrio.config import Settings
from chattrio.metrics import Registry
from chattrio.models import ChatRecord, DeadLetter, Message, RoomCreated, UserCreated, chat_record_encoder
from chattrio.storage.contracts import GroupReader, MessageStore, StoredEventCache
from chattrio.storage.kafka import FETCH_LONG_POLL_MS, ReadBatch, open_topic_reader
from chattrio.storage.postgres import DatabaseUnavailable, DataRefused
from chattrio.storage.redis import CacheUnavailable

log = logging.getLogger(__name__)

FETCH_WAIT = FETCH_LONG_POLL_MS / 1000  # the whole long poll: a record ends it
# Storing is off the delivery path: at most one fetch per interval makes fuller batches, so
# fewer fetches and PostgreSQL round trips.
FETCH_INTERVAL = 0.1
LAG_EVERY = 15.0
STORE_RETRY_FOR = 120.0
STORE_BACKOFF_MAX = 5.0

T = TypeVar("T")


class Persistence:
    def __init__(
        self,
        settings: Settings,
        db: MessageStore,
        cache: StoredEventCache,
        metrics: Registry,
        open_reader: Callable[[], AbstractAsyncContextManager[GroupReader]] | None = None,
    ) -> None:
        """`open_reader`: joins the consumer group; by default through Kafka (open_topic_reader)."""
        self._settings = settings
        self._open_reader = open_reader or (lambda: open_topic_reader(settings, self.group_id))
        self._db = db
        self._cache = cache
        self._rooms_with_holes: set[int] = set()
        self._stored = metrics.counter("chattrio_messages_stored_total", "Messages newly stored in PostgreSQL")
        self._redelivered = metrics.counter(
            "chattrio_messages_redelivered_total", "Messages read again and not stored twice"
        )
        self._dead_lettered = metrics.counter(
            "chattrio_records_dead_lettered_total", "Records put in the dead_letters table instead of being stored"
        )
        self.lag = 0
        metrics.gauge(
            "chattrio_persistence_lag",
            "Records of this node's partitions not yet read by persistence",
            lambda: self.lag,
        )

    @property
    def group_id(self) -> str:
        return f"{self._settings.topic_prefix}-persistence"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self._open_reader() as reader:
            task_status.started()
            next_lag = trio.current_time()
            while True:
                paced = trio.current_time() + FETCH_INTERVAL
                batch = await reader.fetch(FETCH_WAIT)
                if batch.positions:
                    await self._store(batch)
                    await reader.commit(batch.positions)
                await trio.sleep_until(paced)
                if trio.current_time() >= next_lag:
                    self.lag = await reader.lag(self.lag)
                    next_lag = trio.current_time() + LAG_EVERY

    async def _store(self, batch: ReadBatch) -> None:
        messages = [message for _, message in batch.messages]
        topic = self._settings.messages_topic
        next_offsets = {partition: offset for (name, partition), offset in batch.positions.items() if name == topic}
        await self._dead_letter(batch.undecodable)
        refused: list[DeadLetter] = []
        try:
            new = await self._with_retry(lambda: self._db.store_messages(messages, topic, next_offsets))
        except DataRefused as exc:
            log.warning("PostgreSQL refused a batch of %d messages, storing them one by one: %s", len(messages), exc)
            new = await self._store_one_by_one(batch.messages, next_offsets, refused)
        self._stored.inc(len(new))
        self._redelivered.inc(len(messages) - len(new) - len(refused))
        await self._cache_messages(new)
        await self._cache_events(batch)

    async def _store_one_by_one(
        self, messages: list[tuple[int, Message]], next_offsets: dict[int, int], refused: list[DeadLetter]
    ) -> list[Message]:
        """Store what PostgreSQL accepts, dead-letter the rest (also appended to `refused`), then
        record the offsets."""
        topic = self._settings.messages_topic
        new = []
        for partition, message in messages:
            try:
                new += await self._with_retry(partial(self._db.store_messages, [message], topic, {}))
            except DataRefused as exc:
                refused.append(_refused(topic, partition, message, str(exc)))
                await self._dead_letter(refused[-1:])
        await self._with_retry(lambda: self._db.store_messages([], topic, next_offsets))
        return new

    async def _dead_letter(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            log.error(
                "dead-lettered a record",
                extra={
                    "topic": letter.topic,
                    "partition": letter.partition,
                    "offset": letter.offset,
                    "reason": letter.reason,
                },
            )
        if letters:
            self._dead_lettered.inc(await self._with_retry(lambda: self._db.dead_letter(letters)))

    async def _with_retry(self, store: Callable[[], Awaitable[T]]) -> T:
        """PostgreSQL may be restarting: keep the batch and retry for a while before giving up."""
        backoff = Backoff(0.2, STORE_BACKOFF_MAX)
        with trio.fail_after(STORE_RETRY_FOR):
            while True:
                try:
                    return await store()
                except DatabaseUnavailable as exc:
                    log.warning("storing failed, retrying in %.1fs: %s", backoff.delay, exc)
                    await backoff.sleep()

    async def _cache_messages(self, messages: list[Message]) -> None:
        try:
            if self._rooms_with_holes:
                await self._cache.forget_recent(sorted(self._rooms_with_holes))
                self._rooms_with_holes.clear()
            await self._cache.cache_messages(messages)
        except CacheUnavailable as exc:
            self._rooms_with_holes.update(m.room_id for m in messages)
            log.warning("recent-message cache not updated: %s", exc)

    async def _cache_events(self, batch: ReadBatch) -> None:
        try:
            for event in batch.events:
                if isinstance(event, RoomCreated):
                    await self._cache.cache_room(event.room)
            # One command for a batch's new users: a burst of sign-ups is thousands of them.
            await self._cache.cache_users([event.user_id for event in batch.events if isinstance(event, UserCreated)])
        except CacheUnavailable as exc:
            log.warning("user/room cache not updated: %s", exc)


def _refused(topic: str, partition: int, message: Message, reason: str) -> DeadLetter:
    record = ChatRecord(
        message.id, message.room_id, message.sender_id, message.kind, message.text, message.client_msg_id
    )
    return DeadLetter(topic, partition, message.seq, message.sent_at, chat_record_encoder.encode(record), reason)
