"""The room log: what this node's fan-out has read of each room, the index that makes a resume
gap-free (see docs/architecture.md, "Resume without gap or duplicate").

It holds the newest RECENT_PER_ROOM messages of the ROOMS_REMEMBERED most recently active rooms,
the ids of recent messages and events (a retried send or a re-published event is recognised),
and where the fan-out started each partition, so that it can tell which older messages only
storage has. Of rooms it no longer holds it remembers what they dropped, for FORGOTTEN_REMEMBERED
rooms one by one and beyond that as one offset per partition. Of QUIET_ROOMS_REMEMBERED rooms it
has read nothing of, it remembers the newest stored seq, so that sessions entering a quiet room
ask storage once per room and node.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from chattrio.models import Message
from chattrio.storage.kafka import partition_of

RECENT_PER_ROOM = 256
ROOMS_REMEMBERED = 2_000
IDS_REMEMBERED = 200_000
FORGOTTEN_REMEMBERED = 100_000
QUIET_ROOMS_REMEMBERED = 100_000


class _RoomTail:
    """The newest messages of one room, the seq from which the tail is complete, the newest
    message this node read but no longer holds (None: none was dropped), and the room's partition.

    Seqs and frames sit in two deques rather than one of pairs: a pair is a new object for the
    garbage collector to visit per message and node (docs/decisions/gc-thresholds.md)."""

    __slots__ = ("seqs", "frames", "complete_from", "dropped", "partition")

    def __init__(self, complete_from: int, dropped: int | None, partition: int) -> None:
        self.seqs: deque[int] = deque()
        self.frames: deque[bytes] = deque()
        self.complete_from = complete_from
        self.dropped = dropped
        self.partition = partition

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
        # Rooms whose tail was forgotten -> (partition, the newest seq it held): their messages
        # before the next one are not all held.
        self._forgotten: OrderedDict[int, tuple[int, int]] = OrderedDict()
        # Partition -> the newest seq held by any room forgotten from _forgotten too. A seq is the
        # message's offset, so storage that stored the partition past it has every room's dropped
        # messages up to there.
        self._dropped_floor: dict[int, int] = {}
        # Rooms of which the fan-out has read nothing -> their newest seq (None: no message), as
        # storage held it up to the fan-out's start: final until the fan-out reads one of them.
        self._quiet: OrderedDict[int, int | None] = OrderedDict()

    def note_start(self, partition: int, offset: int) -> None:
        if partition not in self._start_offsets:
            self._start_offsets[partition] = offset
            # A new partition moves rooms to other partitions: their quiet seqs may be stale.
            self._quiet.clear()

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
            forgotten = self._forgotten.pop(message.room_id, None)
            dropped = None if forgotten is None else forgotten[1]
            may_have_dropped = forgotten is not None or partition in self._dropped_floor
            complete_from = message.seq if may_have_dropped else self._start_offsets.get(partition, message.seq)
            tail = self._tails[message.room_id] = _RoomTail(complete_from, dropped, partition)
            self._quiet.pop(message.room_id, None)
            if len(self._tails) > ROOMS_REMEMBERED:
                self._forget_oldest_tail()
        else:
            self._tails.move_to_end(message.room_id)
        tail.append(message.seq, frame)
        return True

    def _forget_oldest_tail(self) -> None:
        """Drop the least recently active room's tail, remembering the newest seq it held."""
        room_id, old = self._tails.popitem(last=False)
        newest = old.newest if old.newest is not None else old.dropped
        if newest is None:
            return
        self._forgotten[room_id] = (old.partition, newest)
        if len(self._forgotten) > FORGOTTEN_REMEMBERED:
            _, (floor_partition, floor) = self._forgotten.popitem(last=False)
            self._dropped_floor[floor_partition] = max(floor, self._dropped_floor.get(floor_partition, floor))

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
        if tail is not None:
            return tail.dropped
        forgotten = self._forgotten.get(room_id)
        return None if forgotten is None else forgotten[1]

    def dropped_floor(self, room_id: int) -> tuple[int, int] | None:
        """(partition, offset) storage must have stored the room's partition up to before a
        replay can trust it, when this node may have dropped messages of the room without
        remembering which (it forgot more than FORGOTTEN_REMEMBERED rooms); None otherwise."""
        if room_id in self._forgotten:
            return None  # dropped() names the message
        partition = self._partition_of(room_id)
        floor = None if partition is None else self._dropped_floor.get(partition)
        return None if partition is None or floor is None else (partition, floor + 1)

    def after(self, room_id: int, since: int) -> list[tuple[int, bytes]]:
        tail = self._tails.get(room_id)
        if tail is None:
            return []
        return [(seq, frame) for seq, frame in zip(tail.seqs, tail.frames) if seq > since]

    def passed(self, room_id: int) -> int | None:
        """The last offset of the room's partition the fan-out has read: any message of the room
        after it reaches local sessions live. None before the partitions are assigned."""
        partition = self._partition_of(room_id)
        position = None if partition is None else self.positions.get((self._topic, partition))
        return None if position is None else position - 1

    def partition_start(self, room_id: int) -> tuple[int, int] | None:
        """(partition, offset) where this node's fan-out started reading the room's partition:
        the room's messages before that offset reach this node only through storage. None
        before the partitions are assigned."""
        partition = self._partition_of(room_id)
        start = None if partition is None else self._start_offsets.get(partition)
        return None if partition is None or start is None else (partition, start)

    def quiet_start(self, room_id: int) -> tuple[int, int] | None:
        """(partition, offset) where this node's fan-out started reading the room's partition,
        when it has read no message of the room since: every message of the room so far precedes
        that offset. None when it may have read one, or before the partitions are assigned."""
        if room_id in self._tails or room_id in self._forgotten:
            return None
        start = self.partition_start(room_id)
        return None if start is None or start[0] in self._dropped_floor else start

    def quiet_last_seq(self, room_id: int) -> tuple[bool, int | None]:
        """(True, newest seq) for a room remembered by `remember_quiet`; (False, None) otherwise."""
        if room_id not in self._quiet:
            return False, None
        self._quiet.move_to_end(room_id)
        return True, self._quiet[room_id]

    def remember_quiet(self, room_id: int, last_seq: int | None) -> None:
        """Remember the newest seq of a quiet room, read from storage once it held the room's
        partition up to `quiet_start`. Ignored when the room is no longer quiet, or when the seq
        is past that start (storage holds a message the fan-out has not read yet)."""
        start = self.quiet_start(room_id)
        if start is None or (last_seq is not None and last_seq >= start[1]):
            return
        self._quiet[room_id] = last_seq
        self._quiet.move_to_end(room_id)
        if len(self._quiet) > QUIET_ROOMS_REMEMBERED:
            self._quiet.popitem(last=False)

    def _partition_of(self, room_id: int) -> int | None:
        """The room's partition of the messages topic; None before the partitions are assigned."""
        partition_count = sum(1 for topic, _ in self.positions if topic == self._topic)
        return partition_of(room_id, partition_count) if partition_count else None

    def last_seq(self, room_id: int) -> int | None:
        tail = self._tails.get(room_id)
        return tail.newest if tail is not None else None
