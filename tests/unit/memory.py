"""In-memory storage for unit tests: the contracts of chattrio/storage/contracts.py, no services.

Each store has an `unavailable` switch that makes every call raise the adapter's outage
exception, as the real adapters do when their service does not answer. Time is Trio's clock,
so tests can run under `autojump_clock`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager

import trio

from chattrio.config import Settings
from chattrio.models import (
    ChatRecord,
    DeadLetter,
    Message,
    ReadPositionMoved,
    Room,
    RoomCreated,
    TypingRecord,
    UserCreated,
    event_decoder,
    json_encoder,
)
from chattrio.rooms import page_of_rooms
from chattrio.storage.kafka import REPORT_DEADLINE, KafkaUnavailable, PendingSend, Produced, ReadBatch, partition_of
from chattrio.storage.postgres import DatabaseUnavailable, LookalikeTaken, OutboxRow, RoomQuotaExceeded
from chattrio.storage.redis import CacheUnavailable


class MemoryLog:
    """The messages and events topics: partitions of records, offsets from 0.

    With `hold` on, records handed over wait in `held`, in order, until a test releases them
    (appended then, as a broker acknowledges) or fails them; one never released is failed by
    `fail_overdue` after REPORT_DEADLINE, as ChatProducer fails a record never reported."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.partitions: list[list[tuple[ChatRecord, int]]] = [[] for _ in range(settings.topic_partitions)]
        self.events: list[OutboxRow] = []
        self.typing: list[TypingRecord] = []
        self.unavailable = False
        self.hold = False
        self.held: list[tuple[ChatRecord, PendingSend]] = []
        self._deadlines: list[tuple[float, PendingSend]] = []

    def enqueue(self, record: ChatRecord) -> PendingSend:
        if self.unavailable:
            raise KafkaUnavailable("memory log switched off")
        pending = PendingSend()
        if self.hold:
            self.held.append((record, pending))
            self._deadlines.append((trio.current_time() + REPORT_DEADLINE, pending))
        else:
            self._append(record, pending)
        return pending

    async def produce(self, record: ChatRecord) -> Produced:
        await trio.lowlevel.checkpoint()
        return await self.enqueue(record).wait()

    def release(self, positions: Sequence[int] | None = None) -> None:
        """Acknowledge the held records at these positions of `held` (all by default), in order."""
        for record, pending in self._take(positions):
            self._append(record, pending)

    def fail(self, reason: str, positions: Sequence[int] | None = None) -> None:
        for _, pending in self._take(positions):
            pending.fail(reason)

    def fail_overdue(self) -> None:
        now = trio.current_time()
        for deadline, pending in self._deadlines:
            if deadline <= now:
                pending.fail(f"no delivery report within {REPORT_DEADLINE:g}s")
        self._deadlines = [(deadline, pending) for deadline, pending in self._deadlines if not pending.settled]
        self.held = [(record, pending) for record, pending in self.held if not pending.settled]

    def _take(self, positions: Sequence[int] | None) -> list[tuple[ChatRecord, PendingSend]]:
        chosen = range(len(self.held)) if positions is None else positions
        taken = [self.held[position] for position in chosen]
        self.held = [entry for position, entry in enumerate(self.held) if position not in chosen]
        return taken

    def _append(self, record: ChatRecord, pending: PendingSend) -> None:
        partition = partition_of(record.room_id, len(self.partitions))
        timestamp = int(trio.current_time() * 1000)
        self.partitions[partition].append((record, timestamp))
        pending.deliver(Produced(partition, len(self.partitions[partition]) - 1, timestamp))

    async def publish_events(self, rows: Sequence[OutboxRow]) -> None:
        await trio.lowlevel.checkpoint()
        if self.unavailable:
            raise KafkaUnavailable("memory log switched off")
        self.events.extend(rows)

    def produce_typing(self, record: TypingRecord) -> bool:
        if self.unavailable:
            return False
        self.typing.append(record)
        return True

    def read(self, positions: dict[tuple[str, int], int]) -> ReadBatch:
        """Everything after `positions` (the next offsets), as a reader would fetch it; the
        positions move on. Events are read from the start of the events topic."""
        batch = ReadBatch([], [], {})
        topic = self._settings.messages_topic
        for partition, records in enumerate(self.partitions):
            start = positions.get((topic, partition), 0)
            for offset in range(start, len(records)):
                record, timestamp = records[offset]
                batch.messages.append((partition, record.to_message(offset, timestamp)))
            batch.positions[(topic, partition)] = positions[(topic, partition)] = len(records)
        events_key = (self._settings.events_topic, 0)
        for row in self.events[positions.get(events_key, 0) :]:
            batch.events.append(event_decoder.decode(row.payload))
        batch.positions[events_key] = positions[events_key] = len(self.events)
        typing_key = (self._settings.typing_topic, 0)
        batch.typing += self.typing[positions.get(typing_key, 0) :]
        batch.positions[typing_key] = positions[typing_key] = len(self.typing)
        return batch


class MemoryGroup:
    """The persistence consumer group over a MemoryLog's messages topic: committed offsets, and
    which member holds which partition. `assign` is a rebalance: the new holder reads a partition
    from its committed offset, and the old one's commits of it are refused, as Kafka refuses them."""

    def __init__(self, log: MemoryLog, settings: Settings) -> None:
        self._log = log
        self._topic = settings.messages_topic
        self.committed: dict[tuple[str, int], int] = {}
        self.holder: dict[int, MemoryGroupMember] = {}  # partition -> member
        self.lose_commits = False  # a member that dies between storing and committing

    def member(self) -> MemoryGroupMember:
        return MemoryGroupMember(self)

    def assign(self, member: MemoryGroupMember, partitions: Iterable[int]) -> None:
        for partition in partitions:
            key = (self._topic, partition)
            previous = self.holder.get(partition)
            if previous is not None:
                previous.positions.pop(key, None)
            self.holder[partition] = member
            member.positions[key] = self.committed.get(key, 0)

    def ends(self) -> dict[tuple[str, int], int]:
        """The next offset of each partition that has records."""
        return {(self._topic, p): len(records) for p, records in enumerate(self._log.partitions) if records}

    def read(self, positions: dict[tuple[str, int], int]) -> ReadBatch:
        """The records after `positions`, which move on."""
        batch = ReadBatch([], [], {})
        for (topic, partition), start in positions.items():
            records = self._log.partitions[partition]
            for offset in range(start, len(records)):
                record, timestamp = records[offset]
                batch.messages.append((partition, record.to_message(offset, timestamp)))
            if len(records) > start:
                batch.positions[(topic, partition)] = positions[(topic, partition)] = len(records)
        return batch


class MemoryGroupMember:
    """One member's reader (storage/contracts.GroupReader)."""

    def __init__(self, group: MemoryGroup) -> None:
        self._group = group
        self.positions: dict[tuple[str, int], int] = {}
        self.refused_commits = 0

    @asynccontextmanager
    async def open(self) -> AsyncIterator[MemoryGroupMember]:
        yield self

    async def fetch(self, timeout: float) -> ReadBatch:
        await trio.lowlevel.checkpoint()
        batch = self._group.read(self.positions)
        if not batch.positions:
            await trio.sleep(timeout)  # the long poll: nothing new
        return batch

    async def commit(self, positions: dict[tuple[str, int], int]) -> bool:
        await trio.lowlevel.checkpoint()
        if any(self._group.holder.get(partition) is not self for _, partition in positions):
            self.refused_commits += 1
            return False
        if not self._group.lose_commits:
            self._group.committed.update(positions)
        return True

    async def lag(self, last_known: int) -> int:
        await trio.lowlevel.checkpoint()
        return sum(end - self.positions[key] for key, end in self._group.ends().items() if key in self.positions)


@dataclasses.dataclass
class _OutboxEntry:
    row: OutboxRow
    published: bool = False
    claimed: bool = False


class MemoryDatabase:
    """Users, rooms, the outbox and stored messages, with PostgreSQL's uniqueness rules."""

    def __init__(self) -> None:
        self.users: dict[str, None] = {}
        self.skeletons: dict[str, str] = {}  # skeleton -> the user id holding it
        self.rooms: dict[int, Room] = {}
        self.outbox: list[_OutboxEntry] = []
        self.messages: dict[str, Message] = {}
        self.stored_offsets: dict[tuple[str, int], int] = {}
        self.dead_letters: dict[tuple[str, int, int], DeadLetter] = {}  # (topic, partition, offset) -> letter
        self.read_positions: dict[tuple[str, int], int] = {}  # (user, room) -> last read seq
        self.unavailable = False
        # Fails the next relay after `publish` returned, before the rows are marked published
        # (a crash between the two): the rows are published again later.
        self.fail_next_mark = False
        self.relay_calls = 0
        self._outbox_listeners: list[Callable[[], None]] = []
        self._ids = itertools.count(1)

    def _check(self) -> None:
        if self.unavailable:
            raise DatabaseUnavailable("memory database switched off")

    async def enter_user(self, user_id: str, skeleton: str) -> bool:
        await trio.lowlevel.checkpoint()
        self._check()
        if user_id in self.users:
            return False
        holder = self.skeletons.get(skeleton)
        if holder is not None:
            raise LookalikeTaken(holder)
        self.users[user_id] = None
        self.skeletons[skeleton] = user_id
        event = UserCreated(f"user-{user_id}", user_id, "2026-01-01T00:00:00+00:00")
        self._add_outbox(event.event_id, user_id, json_encoder.encode(event))
        return True

    async def create_room(self, name: str, created_by: str, quota: int | None = None) -> Room:
        await trio.lowlevel.checkpoint()
        self._check()
        if quota is not None and sum(1 for room in self.rooms.values() if room.created_by == created_by) >= quota:
            raise RoomQuotaExceeded(created_by)
        room = Room(next(self._ids), name, created_by, "2026-01-01T00:00:00+00:00")
        self.rooms[room.id] = room
        event = RoomCreated(f"room-{room.id}", room)
        self._add_outbox(event.event_id, str(room.id), json_encoder.encode(event))
        return room

    async def mark_read(self, user_id: str, room_id: int, seq: int) -> bool:
        await trio.lowlevel.checkpoint()
        self._check()
        if self.read_positions.get((user_id, room_id), -1) >= seq:
            return False
        self.read_positions[(user_id, room_id)] = seq
        event = ReadPositionMoved(f"read-{user_id}-{room_id}-{seq}", user_id, room_id, seq)
        self._add_outbox(event.event_id, user_id, json_encoder.encode(event))
        return True

    def _add_outbox(self, event_id: str, key: str, payload: bytes) -> None:
        self.outbox.append(_OutboxEntry(OutboxRow(len(self.outbox) + 1, event_id, key, payload)))
        for on_row in self._outbox_listeners:
            on_row()

    async def listen_outbox(self, on_row: Callable[[], None]) -> None:
        await trio.lowlevel.checkpoint()
        self._check()
        self._outbox_listeners.append(on_row)
        try:
            on_row()
            await trio.sleep_forever()
        finally:
            self._outbox_listeners.remove(on_row)

    async def list_rooms(self, limit: int, before_id: int | None = None, search: str = "") -> list[Room]:
        await trio.lowlevel.checkpoint()
        self._check()
        return page_of_rooms(list(self.rooms.values()), limit, before_id, search)

    async def get_room(self, room_id: int) -> Room | None:
        await trio.lowlevel.checkpoint()
        self._check()
        return self.rooms.get(room_id)

    async def relay_outbox(self, limit: int, publish: Callable[[Sequence[OutboxRow]], Awaitable[None]]) -> int:
        self.relay_calls += 1
        await trio.lowlevel.checkpoint()
        self._check()
        # FOR UPDATE SKIP LOCKED: rows another relay holds are skipped, not waited for.
        entries = [e for e in self.outbox if not e.published and not e.claimed][:limit]
        if not entries:
            return 0
        for entry in entries:
            entry.claimed = True
        try:
            await publish([entry.row for entry in entries])
            if self.fail_next_mark:
                self.fail_next_mark = False
                raise DatabaseUnavailable("connection lost before the commit")
            for entry in entries:
                entry.published = True
        finally:
            for entry in entries:
                entry.claimed = False
        return len(entries)

    async def outbox_backlog(self) -> tuple[int, float]:
        await trio.lowlevel.checkpoint()
        self._check()
        return sum(1 for e in self.outbox if not e.published), 0.0

    async def store_messages(
        self, messages: Sequence[Message], topic: str, next_offsets: dict[int, int]
    ) -> list[Message]:
        await trio.lowlevel.checkpoint()
        self._check()
        taken = {(m.room_id, m.seq) for m in self.messages.values()}
        new = []
        for message in messages:
            if message.id not in self.messages and (message.room_id, message.seq) not in taken:
                self.messages[message.id] = message
                taken.add((message.room_id, message.seq))
                new.append(message)
        for partition, offset in next_offsets.items():
            key = (topic, partition)
            self.stored_offsets[key] = max(self.stored_offsets.get(key, 0), offset)
        return new

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> int:
        await trio.lowlevel.checkpoint()
        self._check()
        new = [d for d in letters if (d.topic, d.partition, d.offset) not in self.dead_letters]
        self.dead_letters.update(((d.topic, d.partition, d.offset), d) for d in new)
        return len(new)

    async def stored_offset(self, topic: str, partition: int) -> int | None:
        await trio.lowlevel.checkpoint()
        self._check()
        return self.stored_offsets.get((topic, partition))

    def _room_messages(self, room_id: int) -> list[Message]:
        return sorted((m for m in self.messages.values() if m.room_id == room_id), key=lambda m: m.seq)

    async def messages_after(self, room_id: int, since: int, limit: int, max_text_bytes: int) -> list[Message]:
        await trio.lowlevel.checkpoint()
        self._check()
        page: list[Message] = []
        text_bytes = 0
        for message in [m for m in self._room_messages(room_id) if m.seq > since][:limit]:
            text_bytes += len(message.text.encode())
            if page and text_bytes > max_text_bytes:
                break
            page.append(message)
        return page

    async def count_messages_after(self, room_id: int, since: int, cap: int) -> int:
        await trio.lowlevel.checkpoint()
        self._check()
        return min(cap, sum(1 for m in self._room_messages(room_id) if m.seq > since))

    async def messages_before(self, room_id: int, before: int | None, limit: int) -> list[Message]:
        await trio.lowlevel.checkpoint()
        self._check()
        older = [m for m in self._room_messages(room_id) if before is None or m.seq < before]
        return older[::-1][:limit]

    async def last_seq(self, room_id: int) -> int | None:
        await trio.lowlevel.checkpoint()
        self._check()
        messages = self._room_messages(room_id)
        return messages[-1].seq if messages else None


class MemoryCache:
    """Redis's part: recent messages, the room cache, presence with expiries, and locks."""

    def __init__(self) -> None:
        self.recent: dict[int, dict[int, Message]] = {}
        self.rooms: dict[int, Room] = {}
        self.users: set[str] = set()
        self.room_users: dict[int, dict[str, float]] = {}  # room -> user -> expiry
        self.user_sessions: dict[tuple[int, str], dict[str, float]] = {}  # (room, user) -> session -> expiry
        self.presence_room_ids: set[int] = set()
        self.locks: dict[str, tuple[str, float]] = {}  # name -> (owner, expiry)
        self.unavailable = False
        self.answers_lost = False  # presence enters are applied, then fail as if the answer was lost

    async def _call(self) -> float:
        await trio.lowlevel.checkpoint()
        if self.unavailable:
            raise CacheUnavailable("memory cache switched off")
        return trio.current_time()

    # Recent messages and the directory cache ----------------------------------------------------

    async def cache_messages(self, messages: Sequence[Message]) -> None:
        await self._call()
        for message in messages:
            self.recent.setdefault(message.room_id, {})[message.seq] = message

    async def forget_recent(self, room_ids: Sequence[int]) -> None:
        await self._call()
        for room_id in room_ids:
            self.recent.pop(room_id, None)

    async def recent_messages(self, room_id: int, since: int) -> tuple[int | None, list[Message]]:
        await self._call()
        cached = self.recent.get(room_id)
        if not cached:
            return None, []
        return min(cached), [cached[seq] for seq in sorted(cached) if seq > since]

    async def last_seq(self, room_id: int) -> int | None:
        await self._call()
        cached = self.recent.get(room_id)
        return max(cached) if cached else None

    async def cache_room(self, room: Room) -> None:
        await self._call()
        self.rooms[room.id] = room

    async def cached_rooms(self) -> list[Room]:
        await self._call()
        return [self.rooms[room_id] for room_id in sorted(self.rooms)]

    async def cached_room(self, room_id: int) -> Room | None:
        await self._call()
        return self.rooms.get(room_id)

    async def cache_users(self, user_ids: Sequence[str]) -> None:
        if user_ids:
            await self._call()
            self.users.update(user_ids)

    # Presence: the Lua scripts of storage/redis.py, step by step ---------------------------------

    def _extend(self, room_id: int, user_id: str, session_id: str, expiry: float) -> None:
        self.user_sessions.setdefault((room_id, user_id), {})[session_id] = expiry
        users = self.room_users.setdefault(room_id, {})
        users[user_id] = max(users.get(user_id, expiry), expiry)

    def _live_sessions(self, room_id: int, user_id: str, now: float) -> int:
        sessions = self.user_sessions.get((room_id, user_id), {})
        for session_id in [s for s, expiry in sessions.items() if expiry <= now]:
            del sessions[session_id]
        return len(sessions)

    async def enter(self, entries: Sequence[tuple[int, str, str]], ttl: float) -> list[bool]:
        now = await self._call()
        joined = []
        for room_id, user_id, session_id in entries:
            sessions = self.user_sessions.get((room_id, user_id), {})
            retried = list(sessions) == [session_id]  # an earlier try whose answer was lost
            joined.append(retried or user_id not in self.room_users.get(room_id, {}))
            self._extend(room_id, user_id, session_id, now + ttl)
            self.presence_room_ids.add(room_id)
        if self.answers_lost:
            raise CacheUnavailable("the answer was lost")
        return joined

    async def heartbeat(self, memberships: Sequence[tuple[int, str, str]], ttl: float) -> None:
        now = await self._call()
        for room_id, user_id, session_id in memberships:
            self._extend(room_id, user_id, session_id, now + ttl)

    async def leave(self, entries: Sequence[tuple[int, str, str]], grace: float) -> list[int]:
        now = await self._call()
        remaining = []
        for room_id, user_id, session_id in entries:
            self.user_sessions.get((room_id, user_id), {}).pop(session_id, None)
            left = self._live_sessions(room_id, user_id, now)
            users = self.room_users.get(room_id, {})
            if left == 0 and user_id in users:
                users[user_id] = max(users[user_id], now + grace)
            remaining.append(left)
        return remaining

    def _remove_if_gone(self, room_id: int, user_id: str, now: float) -> bool:
        users = self.room_users.get(room_id, {})
        if self._live_sessions(room_id, user_id, now) or user_id not in users:
            return False
        del users[user_id]
        if not users:
            self.room_users.pop(room_id, None)
        return True

    async def remove_if_gone(self, room_id: int, user_id: str) -> bool:
        return self._remove_if_gone(room_id, user_id, await self._call())

    async def sweep_gone(self, room_ids: Sequence[int]) -> list[tuple[int, str]]:
        now = await self._call()
        gone = []
        for room_id in room_ids:
            expired = [u for u, expiry in self.room_users.get(room_id, {}).items() if expiry <= now]
            gone += [(room_id, user) for user in expired if self._remove_if_gone(room_id, user, now)]
            if room_id not in self.room_users:
                self.presence_room_ids.discard(room_id)
        return gone

    async def presence_rooms(self) -> list[int]:
        await self._call()
        return sorted(self.presence_room_ids)

    async def members(self, room_id: int) -> list[str]:
        now = await self._call()
        return sorted(u for u, expiry in self.room_users.get(room_id, {}).items() if expiry >= now)

    async def member_counts(self, room_ids: Sequence[int]) -> dict[int, int]:
        now = await self._call()
        return {r: sum(1 for e in self.room_users.get(r, {}).values() if e >= now) for r in room_ids}

    # The lock ----------------------------------------------------------------------------------

    async def hold_lock(self, name: str, owner: str, ttl: float) -> bool:
        now = await self._call()
        holder = self.locks.get(name)
        if holder is None or holder[1] <= now or holder[0] == owner:
            self.locks[name] = (owner, now + ttl)
            return True
        return False

    async def release_lock(self, name: str, owner: str) -> None:
        await self._call()
        if self.locks.get(name, ("", 0.0))[0] == owner:
            del self.locks[name]
