"""The fan-out consumer: every node reads every partition and delivers to its own sessions.

No consumer group: partitions are assigned directly, starting at the end the first time, so
nodes leave nothing behind on the broker. Positions survive a restart of the consumer, so a
restart resumes where it stopped instead of skipping messages.
"""

from __future__ import annotations

import logging
import time

import trio

from chattrio.config import Settings
from chattrio.frames import (
    MessagesFrame,
    ReadPositionFrame,
    RoomCreatedFrame,
    RoomMessageFrame,
    TypingFrame,
    encode_frame,
)
from chattrio.metrics import Registry
from chattrio.models import Message, ReadPositionMoved, RoomCreated
from chattrio.roomlog import RoomLog
from chattrio.rooms import RoomDirectory
from chattrio.storage.kafka import FETCH_LONG_POLL_MS, ReadBatch
from chattrio.storage.partition_reader import PartitionReader, open_partition_reader
from chattrio.transport.sessions import Session, SessionRegistry
from chattrio.transport.websocket import text_frame

log = logging.getLogger(__name__)

FETCH_WAIT = FETCH_LONG_POLL_MS / 1000  # the whole long poll: a record ends it
PARTITION_CHECK_INTERVAL = 30.0
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
# A MESSAGES frame carries at most this many messages and (about) this many bytes, so a backlog
# read in one fetch after an outage does not become one huge frame for a client to parse.
MESSAGES_PER_FRAME = 100
MESSAGES_FRAME_BYTES = 65_536


class Fanout:
    def __init__(
        self,
        settings: Settings,
        sessions: SessionRegistry,
        room_log: RoomLog,
        rooms: RoomDirectory,
        metrics: Registry,
    ) -> None:
        self._settings = settings
        # At most one fetch per interval: under load a fetch, and a write to each session, then
        # carry all the messages of the interval instead of one each, at up to this much latency.
        self._fetch_interval = settings.fanout_interval_ms / 1000
        self._sessions = sessions
        self._room_log = room_log
        self._rooms = rooms
        self.lag = 0
        self._delivered = metrics.counter("chattrio_messages_delivered_total", "Messages queued to local sessions")
        self._consumed = metrics.counter("chattrio_messages_consumed_total", "Chat messages read by the fan-out")
        self._duplicates = metrics.counter(
            "chattrio_fanout_duplicates_total", "Retried sends recognised by id and not delivered again"
        )
        self._latency = metrics.histogram(
            "chattrio_fanout_latency_ms", "Broker timestamp to local delivery, milliseconds", LATENCY_BUCKETS_MS
        )
        metrics.gauge("chattrio_fanout_lag", "Messages the fan-out consumer has not fetched yet", lambda: self.lag)
        self._typing_delivered = metrics.counter(
            "chattrio_typing_delivered_total", "TYPING frames queued to local sessions"
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with open_partition_reader(self._settings) as reader:
            await reader.check_versions()
            await self._assign(reader)
            task_status.started()
            next_check = trio.current_time() + PARTITION_CHECK_INTERVAL
            while True:
                paced = trio.current_time() + self._fetch_interval
                self.apply(await reader.fetch(FETCH_WAIT))
                await trio.sleep_until(paced)
                if trio.current_time() >= next_check:
                    await self._assign(reader)
                    self.lag = await reader.lag(self.lag)
                    next_check = trio.current_time() + PARTITION_CHECK_INTERVAL

    async def _assign(self, reader: PartitionReader) -> None:
        await reader.assign_all(self._room_log.positions)
        for (topic, partition), offset in self._room_log.positions.items():
            if topic == self._settings.messages_topic:
                self._room_log.note_start(partition, offset)

    def apply(self, batch: ReadBatch) -> None:
        now_ms = time.time() * 1000
        fresh: dict[int, list[tuple[Message, bytes]]] = {}  # per room, in the order read
        for partition, message in batch.messages:
            self._consumed.inc()
            frame = text_frame(encode_frame(RoomMessageFrame(message)))
            if not self._room_log.record(partition, message, frame):
                self._duplicates.inc()
                continue
            fresh.setdefault(message.room_id, []).append((message, frame))
        to_flush: list[Session] = []
        for room_id, messages in fresh.items():
            delivered = self._queue_to_room(room_id, messages, to_flush)
            if delivered:
                self._delivered.inc(delivered * len(messages))
                for message, _ in messages:
                    self._latency.observe_many(max(0.0, now_ms - message.sent_at), delivered)
        # One write per session for the whole batch, in the same synchronous step.
        for session in to_flush:
            session.flush()
        self._deliver_typing(batch)
        for event in batch.events:
            if isinstance(event, RoomCreated) and self._room_log.first_time_event(event.event_id):
                self._rooms.learn(event.room)
                self._sessions.deliver_to_room_watchers(text_frame(encode_frame(RoomCreatedFrame(event.room))))
            elif isinstance(event, ReadPositionMoved) and self._room_log.first_time_event(event.event_id):
                position = ReadPositionFrame(event.room_id, event.last_read_seq)
                self._sessions.deliver_to_user(event.user_id, text_frame(encode_frame(position)))
        self._room_log.positions.update(batch.positions)

    def _queue_to_room(self, room_id: int, messages: list[tuple[Message, bytes]], to_flush: list[Session]) -> int:
        """Queue a room's new messages to its local sessions: a session that batches gets them in
        MESSAGES frames (encoded once for all of them), the others one ROOM_MESSAGE each."""
        if len(messages) == 1:
            return self._sessions.queue_to_room(room_id, messages[0][1], to_flush)
        return self._sessions.queue_many_to_room(
            room_id, [frame for _, frame in messages], lambda: messages_frames(room_id, messages), to_flush
        )

    def _deliver_typing(self, batch: ReadBatch) -> None:
        """Each TYPING to the room's sessions of other users, one write per session."""
        to_flush: list[Session] = []
        for record in batch.typing:
            frame = text_frame(encode_frame(TypingFrame(record.room_id, record.user_id)))
            delivered = self._sessions.queue_to_room_except_user(record.room_id, record.user_id, frame, to_flush)
            self._typing_delivered.inc(delivered)
        for session in to_flush:
            session.flush()


def messages_frames(room_id: int, messages: list[tuple[Message, bytes]]) -> list[bytes]:
    """MESSAGES frames carrying `messages` (with their ROOM_MESSAGE frames, whose sizes bound each
    MESSAGES frame) in order."""
    frames: list[bytes] = []
    chunk: list[Message] = []
    size = 0
    for message, frame in messages:
        if chunk and (len(chunk) == MESSAGES_PER_FRAME or size + len(frame) > MESSAGES_FRAME_BYTES):
            frames.append(text_frame(encode_frame(MessagesFrame(room_id, chunk))))
            chunk, size = [], 0
        chunk.append(message)
        size += len(frame)
    frames.append(text_frame(encode_frame(MessagesFrame(room_id, chunk))))
    return frames
