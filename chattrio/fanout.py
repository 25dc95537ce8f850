"""The fan-out consumer: every node reads every partition and delivers to its own sessions.

No consumer group: partitions are assigned directly, starting at the end the first time, so
nodes leave nothing behind on the broker. Positions survive a restart of the consumer, so a
restart resumes where it stopped instead of skipping messages.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque

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
from chattrio.rooms import RoomDirectory
from chattrio.sessions import Session, SessionRegistry
from chattrio.storage.kafka import FETCH_LONG_POLL_MS, ReadBatch, partition_of
from chattrio.storage.partition_reader import PartitionReader, open_partition_reader
from chattrio.websocket import text_frame

log = logging.getLogger(__name__)

RECENT_PER_ROOM = 256
ROOMS_REMEMBERED = 2_000
IDS_REMEMBERED = 200_000
FETCH_WAIT = FETCH_LONG_POLL_MS / 1000  # the whole long poll: a record ends it
# At most one fetch per interval: under load a fetch, and a write to each session, then carry
# all the messages of the interval instead of one each; it adds at most this much latency.
FETCH_INTERVAL = 0.01
PARTITION_CHECK_INTERVAL = 30.0
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
# A MESSAGES frame carries at most this many messages and (about) this many bytes, so a backlog
# read in one fetch after an outage does not become one huge frame for a client to parse.
MESSAGES_PER_FRAME = 100
MESSAGES_FRAME_BYTES = 65_536


class _RoomTail:
    """The newest messages of one room, the seq from which the tail is complete, and the newest
    message this node read but no longer holds (None: none was dropped).

    Seqs and frames sit in two deques rather than one of pairs: a pair is a new object for the
    garbage collector to visit per message and node (docs/decisions/gc-thresholds.md)."""

    __slots__ = ("seqs", "frames", "complete_from", "dropped")

    def __init__(self, complete_from: int, dropped: int | None) -> None:
        self.seqs: deque[int] = deque()
        self.frames: deque[bytes] = deque()
        self.complete_from = complete_from
        self.dropped = dropped

    def append(self, seq: int, frame: bytes) -> None:
        self.seqs.append(seq)
        self.frames.append(frame)
        if len(self.seqs) > RECENT_PER_ROOM:
            self.dropped = self.seqs.popleft()
            self.frames.popleft()
            self.complete_from = self.dropped + 1

    @property
    def newest(self) -> int | None:
        return self.seqs[-1] if self.seqs else None


class RoomLog:
    """What this node's fan-out has seen, for resuming sessions without a gap or a duplicate."""

    def __init__(self, messages_topic: str = "") -> None:
        self._topic = messages_topic
        self.positions: dict[tuple[str, int], int] = {}
        self._start_offsets: dict[int, int] = {}
        self._tails: OrderedDict[int, _RoomTail] = OrderedDict()
        self._ids: OrderedDict[str, int] = OrderedDict()  # message id -> seq (ids are per room)
        self._event_ids: OrderedDict[str, None] = OrderedDict()
        # Rooms whose tail was forgotten, with the newest seq it held: their messages before the
        # next one are not all held.
        self._forgotten: dict[int, int] = {}

    def note_start(self, partition: int, offset: int) -> None:
        self._start_offsets.setdefault(partition, offset)

    def seen(self, message_id: str) -> int | None:
        """The seq of a message already delivered, by id."""
        return self._ids.get(message_id)

    def record(self, partition: int, message: Message, frame: bytes) -> bool:
        """Remember a delivered message; False when its id was delivered before (a retried send)."""
        if message.id in self._ids:
            return False
        self._ids[message.id] = message.seq
        if len(self._ids) > IDS_REMEMBERED:
            self._ids.popitem(last=False)
        tail = self._tails.get(message.room_id)
        if tail is None:
            dropped = self._forgotten.pop(message.room_id, None)
            complete_from = message.seq if dropped is not None else self._start_offsets.get(partition, message.seq)
            tail = self._tails[message.room_id] = _RoomTail(complete_from, dropped)
            if len(self._tails) > ROOMS_REMEMBERED:
                forgotten, old = self._tails.popitem(last=False)
                newest = old.newest if old.newest is not None else old.dropped
                if newest is not None:
                    self._forgotten[forgotten] = newest
        else:
            self._tails.move_to_end(message.room_id)
        tail.append(message.seq, frame)
        return True

    def first_time_event(self, event_id: str) -> bool:
        if event_id in self._event_ids:
            return False
        self._event_ids[event_id] = None
        if len(self._event_ids) > IDS_REMEMBERED:
            self._event_ids.popitem(last=False)
        return True

    def covers(self, room_id: int, since: int) -> bool:
        """True when every message of the room after `since` seen by this node is still held."""
        tail = self._tails.get(room_id)
        return tail is not None and tail.complete_from <= since + 1

    def dropped(self, room_id: int) -> int | None:
        """The newest message of the room this node read and no longer holds: a resume that
        needs older messages must find up to this one in storage, or it would leave a gap."""
        tail = self._tails.get(room_id)
        return tail.dropped if tail is not None else self._forgotten.get(room_id)

    def after(self, room_id: int, since: int) -> list[tuple[int, bytes]]:
        tail = self._tails.get(room_id)
        if tail is None:
            return []
        return [(seq, frame) for seq, frame in zip(tail.seqs, tail.frames) if seq > since]

    def passed(self, room_id: int) -> int | None:
        """The last offset of the room's partition the fan-out has read: any message of the room
        after it reaches local sessions live. None before the partitions are assigned."""
        partition_count = sum(1 for topic, _ in self.positions if topic == self._topic)
        if not partition_count:
            return None
        position = self.positions.get((self._topic, partition_of(room_id, partition_count)))
        return None if position is None else position - 1

    def partition_start(self, room_id: int) -> tuple[int, int] | None:
        """(partition, offset) where this node's fan-out started reading the room's partition:
        the room's messages before that offset reach this node only through storage. None
        before the partitions are assigned."""
        partition_count = sum(1 for topic, _ in self.positions if topic == self._topic)
        if not partition_count:
            return None
        partition = partition_of(room_id, partition_count)
        start = self._start_offsets.get(partition)
        return None if start is None else (partition, start)

    def last_seq(self, room_id: int) -> int | None:
        tail = self._tails.get(room_id)
        return tail.newest if tail is not None else None


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
        self._sessions = sessions
        self._log = room_log
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
                paced = trio.current_time() + FETCH_INTERVAL
                self.apply(await reader.fetch(FETCH_WAIT))
                await trio.sleep_until(paced)
                if trio.current_time() >= next_check:
                    await self._assign(reader)
                    self.lag = await reader.lag(self.lag)
                    next_check = trio.current_time() + PARTITION_CHECK_INTERVAL

    async def _assign(self, reader: PartitionReader) -> None:
        await reader.assign_all(self._log.positions)
        for (topic, partition), offset in self._log.positions.items():
            if topic == self._settings.messages_topic:
                self._log.note_start(partition, offset)

    def apply(self, batch: ReadBatch) -> None:
        now_ms = time.time() * 1000
        fresh: dict[int, list[tuple[Message, bytes]]] = {}  # per room, in the order read
        for partition, message in batch.messages:
            self._consumed.inc()
            frame = text_frame(encode_frame(RoomMessageFrame(message)))
            if not self._log.record(partition, message, frame):
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
            if isinstance(event, RoomCreated) and self._log.first_time_event(event.event_id):
                self._rooms.learn(event.room)
                self._sessions.deliver_to_room_watchers(text_frame(encode_frame(RoomCreatedFrame(event.room))))
            elif isinstance(event, ReadPositionMoved) and self._log.first_time_event(event.event_id):
                position = ReadPositionFrame(event.room_id, event.last_read_seq)
                self._sessions.deliver_to_user(event.user_id, text_frame(encode_frame(position)))
        self._log.positions.update(batch.positions)

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
