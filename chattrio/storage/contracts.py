"""The contracts the core uses of its storage, as Protocols.

The adapters in this package (postgres.Database, redis.RedisStore, kafka.ChatProducer) fulfil
them against the real services; tests/unit/memory.py fulfils them in memory, so the core logic
(resume, dedupe, presence, the outbox relay, persistence) is tested without any service. Each
method raises its adapter's "unavailable" exception (DatabaseUnavailable, CacheUnavailable,
KafkaUnavailable) when the service does not answer; the core treats that as an outage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from chattrio.models import ChatRecord, DeadLetter, Message, Room, TypingRecord
from chattrio.storage.kafka import PendingSend, Produced, ReadBatch
from chattrio.storage.postgres import OutboxRow


class MessageLog(Protocol):
    """Kafka as the core writes it: chat records keyed by room, and outbox events."""

    def enqueue(self, record: ChatRecord) -> PendingSend:
        """Hand the record over for the room's partition without waiting: records handed over
        one after the other are appended in that order. KafkaUnavailable at once when refused.
        The record settles (delivered or failed) once, by its report or at REPORT_DEADLINE."""

    async def produce(self, record: ChatRecord) -> Produced:
        """Append to the room's partition; returns once the broker acknowledged (acks=all)."""

    async def publish_events(self, rows: Sequence[OutboxRow]) -> None:
        """Publish outbox rows to the events topic; returns once all are acknowledged."""

    def produce_typing(self, record: TypingRecord) -> bool:
        """Hand a typing record to the typing topic without waiting; False when it was refused."""


class ReadPositionStore(Protocol):
    """Read positions (PostgreSQL): moved forward only, each move announced through the outbox."""

    async def mark_read(self, user_id: str, room_id: int, seq: int) -> bool:
        """False when the position was at `seq` or beyond already."""

    async def last_seq(self, room_id: int) -> int | None: ...


class GroupReader(Protocol):
    """A member of the persistence consumer group (kafka.TopicReader): what it fetches of its
    partitions, and the offsets it commits once they are stored."""

    async def fetch(self, timeout: float) -> ReadBatch: ...

    async def commit(self, positions: dict[tuple[str, int], int]) -> bool:
        """False when a rebalance took the partitions away first: the new owner reads them again."""

    async def lag(self, last_known: int) -> int: ...


class MessageStore(Protocol):
    """Stored chat messages (PostgreSQL): each message once, and how far each partition is stored."""

    async def store_messages(
        self, messages: Sequence[Message], topic: str, next_offsets: dict[int, int]
    ) -> list[Message]:
        """Store a batch and the partitions' progress in one transaction; returns the new ones."""

    async def stored_offset(self, topic: str, partition: int) -> int | None: ...

    async def messages_after(self, room_id: int, since: int, limit: int, max_text_bytes: int) -> list[Message]:
        """Oldest first: at most `limit`, within `max_text_bytes` of text (the first always comes)."""

    async def count_messages_after(self, room_id: int, since: int, cap: int) -> int: ...

    async def messages_before(self, room_id: int, before: int | None, limit: int) -> list[Message]: ...

    async def last_seq(self, room_id: int) -> int | None: ...

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> int:
        """Keep records that cannot be stored, with the reason; returns how many were new."""


class ChatStore(MessageStore, ReadPositionStore, Protocol):
    """What the chat service keeps in PostgreSQL: stored messages and read positions."""


class Directory(Protocol):
    """Users and rooms (PostgreSQL); each change commits with its outbox row."""

    async def enter_user(self, user_id: str, skeleton: str) -> bool:
        """Create the user if unknown (True); LookalikeTaken when another id has the skeleton."""

    async def create_room(self, name: str, created_by: str, quota: int | None = None) -> Room:
        """RoomQuotaExceeded when `quota` is given and the user has created that many rooms."""

    async def list_rooms(self, limit: int, before_id: int | None = None, search: str = "") -> list[Room]:
        """Up to `limit` rooms, newest first, with id < before_id, whose name contains `search` (any case)."""

    async def get_room(self, room_id: int) -> Room | None: ...


class OutboxStore(Protocol):
    async def relay_outbox(self, limit: int, publish: Callable[[Sequence[OutboxRow]], Awaitable[None]]) -> int:
        """Claim up to `limit` unpublished rows in order, publish them, mark them: atomically."""

    async def outbox_backlog(self) -> tuple[int, float]: ...

    async def listen_outbox(self, on_row: Callable[[], None]) -> None:
        """Call `on_row` when a row was added, and once when listening starts; until cancelled."""


class MessageCache(Protocol):
    """The recent messages of each room (Redis): a read path only, never holes."""

    async def cache_messages(self, messages: Sequence[Message]) -> None: ...

    async def forget_recent(self, room_ids: Sequence[int]) -> None: ...

    async def recent_messages(self, room_id: int, since: int) -> tuple[int | None, list[Message]]: ...

    async def last_seq(self, room_id: int) -> int | None: ...


class DirectoryCache(Protocol):
    async def cache_room(self, room: Room) -> None: ...

    async def cached_rooms(self) -> list[Room]: ...

    async def cached_room(self, room_id: int) -> Room | None: ...

    async def cache_users(self, user_ids: Sequence[str]) -> None: ...


class PresenceStore(Protocol):
    """Who is in which room across nodes, with expiring heartbeats; each decision made once."""

    async def enter(self, entries: Sequence[tuple[int, str, str]], ttl: float) -> list[bool]:
        """(room, user, session) entries, applied in order; per entry True when the user was in
        the room on no node (a "joined" message is due)."""

    async def heartbeat(self, memberships: Sequence[tuple[int, str, str]], ttl: float) -> None: ...

    async def leave(self, entries: Sequence[tuple[int, str, str]], grace: float) -> list[int]:
        """(room, user, session) entries, applied in order; per entry the user's live sessions
        left in the room."""

    async def remove_if_gone(self, room_id: int, user_id: str) -> bool:
        """True for the one caller that removed a user with no live session left."""

    async def sweep_gone(self, room_ids: Sequence[int]) -> list[tuple[int, str]]: ...

    async def presence_rooms(self) -> list[int]: ...

    async def members(self, room_id: int) -> list[str]: ...

    async def member_counts(self, room_ids: Sequence[int]) -> dict[int, int]: ...


class LockStore(Protocol):
    async def hold_lock(self, name: str, owner: str, ttl: float) -> bool:
        """Take or extend the lock; False when another owner holds it."""

    async def release_lock(self, name: str, owner: str) -> None: ...


class RoomCache(DirectoryCache, PresenceStore, Protocol):
    """What the room directory reads of Redis: the rooms, and who is in them (member counts)."""


class StoredEventCache(MessageCache, DirectoryCache, Protocol):
    """What persistence writes to Redis: the recent messages, the rooms and the users."""
