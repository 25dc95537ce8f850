"""Which rooms exist: PostgreSQL is the truth; a node remembers rooms it has seen (never deleted)."""

from __future__ import annotations

import logging

from chattrio.models import Room
from chattrio.storage.postgres import Database, DatabaseUnavailable
from chattrio.storage.redis import CacheUnavailable, RedisStore

log = logging.getLogger(__name__)


class RoomDirectory:
    def __init__(self, db: Database, cache: RedisStore) -> None:
        self._db = db
        self._cache = cache
        self._known: dict[int, Room] = {}

    def learn(self, room: Room) -> None:
        self._known[room.id] = room

    async def find(self, room_id: int) -> Room | None:
        """The room, or None when it does not exist. Raises DatabaseUnavailable when unknown here
        and PostgreSQL is down, unless the Redis cache (a read path only) knows it."""
        room = self._known.get(room_id)
        if room is not None:
            return room
        try:
            room = await self._db.get_room(room_id)
        except DatabaseUnavailable:
            room = await self._cached(room_id)
            if room is None:
                raise
        if room is not None:
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

    async def _with_member_counts(self, rooms: list[Room]) -> list[Room]:
        """The rooms with their present member counts (0 when Redis cannot tell)."""
        try:
            counts = await self._cache.member_counts([room.id for room in rooms])
        except CacheUnavailable:
            counts = {}
        return [
            Room(room.id, room.name, room.created_by, room.created_at, counts.get(room.id, 0)) for room in rooms
        ]


def page_of_rooms(rooms: list[Room], limit: int, before_id: int | None, search: str) -> list[Room]:
    """Directory.list_rooms over rooms in memory (the Redis cache's copy when PostgreSQL is down)."""
    needle = search.lower()
    matching = [room for room in rooms
                if (before_id is None or room.id < before_id) and needle in room.name.lower()]
    return sorted(matching, key=lambda room: room.id, reverse=True)[:limit]
