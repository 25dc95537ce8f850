"""Which rooms exist: PostgreSQL is the truth; a node remembers the rooms it used last (rooms are
never deleted, so a remembered room stays true), and for a short while the ids it found unknown,
so asking again and again costs no query."""

from __future__ import annotations

import logging
from collections import OrderedDict

import trio

from chattrio.config import Settings
from chattrio.metrics import Registry
from chattrio.models import Room
from chattrio.storage.contracts import Directory, RoomCache
from chattrio.storage.postgres import DatabaseUnavailable
from chattrio.storage.redis import CacheUnavailable

log = logging.getLogger(__name__)

UNKNOWN_ROOMS_REMEMBERED = 10_000
# Every node learns every room created anywhere (ROOM_CREATED); past this many, the least recently
# used is forgotten, and asking for it again costs one query.
KNOWN_ROOMS_REMEMBERED = 100_000
RoomPage = list[Room]  # named: inside RoomDirectory, `list` is its method


class RoomDirectory:
    def __init__(
        self,
        db: Directory,
        cache: RoomCache,
        metrics: Registry | None = None,
        unknown_ttl: float = Settings.unknown_room_cache_seconds,
    ) -> None:
        self._db = db
        self._cache = cache
        self._known: OrderedDict[int, Room] = OrderedDict()
        # Ids found unknown -> when that answer expires; a room created meanwhile is learnt from
        # its ROOM_CREATED event (or its creation here), which clears the entry at once.
        self._unknown: OrderedDict[int, float] = OrderedDict()
        self._unknown_ttl = unknown_ttl
        self._unknown_hits = (metrics or Registry()).counter(
            "chattrio_unknown_room_cache_hits_total", "Lookups of room ids answered from the negative cache"
        )

    def learn(self, room: Room) -> None:
        self._known[room.id] = room
        self._known.move_to_end(room.id)
        if len(self._known) > KNOWN_ROOMS_REMEMBERED:
            self._known.popitem(last=False)
        self._unknown.pop(room.id, None)

    def _known_unknown(self, room_id: int) -> bool:
        expires = self._unknown.get(room_id)
        if expires is None:
            return False
        if expires > trio.current_time():
            self._unknown_hits.inc()
            return True
        del self._unknown[room_id]
        return False

    def _remember_unknown(self, room_id: int) -> None:
        self._unknown[room_id] = trio.current_time() + self._unknown_ttl
        self._unknown.move_to_end(room_id)
        if len(self._unknown) > UNKNOWN_ROOMS_REMEMBERED:
            self._unknown.popitem(last=False)

    async def find(self, room_id: int) -> Room | None:
        """The room, or None when it does not exist. Raises DatabaseUnavailable when unknown here
        and PostgreSQL is down, unless the Redis cache (a read path only) knows it."""
        room = self._known.get(room_id)
        if room is not None:
            self._known.move_to_end(room_id)
            return room
        if self._known_unknown(room_id):
            return None
        try:
            room = await self._db.get_room(room_id)
        except DatabaseUnavailable:
            room = await self._cached(room_id)
            if room is None:
                raise
        if room is None:
            self._remember_unknown(room_id)
        else:
            self.learn(room)
        return room

    async def _cached(self, room_id: int) -> Room | None:
        try:
            return await self._cache.cached_room(room_id)
        except CacheUnavailable:
            return None

    async def list(self, limit: int, before_id: int | None = None, search: str = "") -> list[Room]:
        """A page of rooms, newest first, with their present member counts (see
        Directory.list_rooms); from the cache when PostgreSQL is down."""
        try:
            rooms = await self._db.list_rooms(limit, before_id, search)
        except DatabaseUnavailable:
            rooms = page_of_rooms(await self._cache.cached_rooms(), limit, before_id, search)
        for room in rooms:
            self.learn(room)
        return await self._with_member_counts(rooms)

    async def with_member_count(self, room: Room) -> Room:
        return (await self._with_member_counts([room]))[0]

    async def _with_member_counts(self, rooms: RoomPage) -> RoomPage:
        """The rooms with their present member counts (0 when Redis cannot tell)."""
        try:
            counts = await self._cache.member_counts([room.id for room in rooms])
        except CacheUnavailable:
            counts = {}
        return [Room(room.id, room.name, room.created_by, room.created_at, counts.get(room.id, 0)) for room in rooms]


def page_of_rooms(rooms: list[Room], limit: int, before_id: int | None, search: str) -> list[Room]:
    """Directory.list_rooms over rooms in memory (the Redis cache's copy when PostgreSQL is down)."""
    needle = search.lower()
    matching = [room for room in rooms if (before_id is None or room.id < before_id) and needle in room.name.lower()]
    return sorted(matching, key=lambda room: room.id, reverse=True)[:limit]
