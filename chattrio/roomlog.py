"""The room log: what this node's fan-out has read of each room, the index that makes a resume
gap-free (see docs/architecture.md, "Resume without gaps").

It holds the newest RECENT_PER_ROOM messages of the ROOMS_REMEMBERED most recently active rooms,
the ids of recent messages and events (a retried send or a re-published event is recognised),
and where the fan-out started each partition, so that it can tell which older messages only
storage has.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from chattrio.models import Message
from chattrio.storage.kafka import partition_of

RECENT_PER_ROOM = 256
ROOMS_REMEMBERED = 2_000
IDS_REMEMBERED = 200_000


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
