"""Redis through coredis (native on Trio via anyio): caches, presence and the outbox lock.

Nothing here is read to validate a write. Every multi-step operation is one Lua script, so it is
atomic across nodes and costs one round trip.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import coredis
import msgspec
import trio
from coredis.connection import TCPLocation

from chattrio.models import Message, Room, json_encoder, message_decoder

log = logging.getLogger(__name__)

REDIS_TIMEOUT = 2.0
# After a failed call, at most this often: ask the Sentinels whether the primary moved.
PRIMARY_RECHECK_INTERVAL = 1.0
SENTINEL_SCHEME = "redis+sentinel"
RECENT_PER_ROOM = 300

T = TypeVar("T")
ScriptArg = str | bytes | int | float

_CACHE_MESSAGES = """
local keep = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[2 * i], ARGV[2 * i + 1])
end
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYRANK', key, 0, -keep - 1)
end
return #KEYS
"""

# Returns {oldest cached seq, messages with seq > since...}, or {} when nothing is cached.
_RECENT_MESSAGES = """
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #oldest == 0 then return {} end
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
table.insert(items, 1, oldest[2])
return items
"""

_LAST_SEQ = """
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #newest == 0 then return false end
return newest[2]
"""

# Many sessions entering rooms in one round trip (a burst of connections costs one call per
# batch, not one per SUBSCRIBE). KEYS: the set of rooms with presence, then per entry its room's
# users and the user's sessions in that room. ARGV: expiry ms, then per entry user, session, room id.
# Returns per entry 1 when the user was in the room on no node (a "joined" message is due); the
# entries are applied in order, so of two sessions of a user entering one room only the first is.
# An enter whose answer was lost is tried again: when the user's only session is this one, the
# earlier try put it there, and the join is still due (heartbeats leave such sessions out).
_ENTER = """
local joined = {}
for i = 1, (#KEYS - 1) / 2 do
  local users, sessions = KEYS[2 * i], KEYS[2 * i + 1]
  local user, session, room = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  local present = redis.call('ZSCORE', users, user)
  if present and redis.call('ZCARD', sessions) == 1 and redis.call('ZSCORE', sessions, session) then
    present = false
  end
  redis.call('ZADD', sessions, ARGV[1], session)
  redis.call('PEXPIREAT', sessions, ARGV[1])
  redis.call('ZADD', users, 'GT', ARGV[1], user)
  redis.call('SADD', KEYS[1], room)
  joined[i] = present and 0 or 1
end
return joined
"""

# KEYS: pairs of (room users, user sessions). ARGV: expiry ms, then pairs of (user, session).
_HEARTBEAT = """
for i = 1, #KEYS, 2 do
  local user, session = ARGV[i + 1], ARGV[i + 2]
  redis.call('ZADD', KEYS[i + 1], ARGV[1], session)
  redis.call('PEXPIREAT', KEYS[i + 1], ARGV[1])
  redis.call('ZADD', KEYS[i], 'GT', ARGV[1], user)
end
return #KEYS / 2
"""

# Many sessions leaving rooms in one round trip. KEYS: per entry its room's users and the user's
# sessions in that room. ARGV: now ms, grace end ms, then per entry user, session.
# Returns per entry the user's live sessions left in the room; at 0 the caller checks again after
# the grace. A user the sweep already removed (a leave that waited out a Redis outage) is not
# added back: the sweep announced that leave.
_LEAVE = """
local left = {}
for i = 1, #KEYS / 2 do
  local users, sessions = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('ZREM', sessions, ARGV[2 * i + 2])
  redis.call('ZREMRANGEBYSCORE', sessions, '-inf', ARGV[1])
  left[i] = redis.call('ZCARD', sessions)
  if left[i] == 0 then redis.call('ZADD', users, 'XX', 'GT', ARGV[2], ARGV[2 * i + 1]) end
end
return left
"""

# KEYS: room users, the user's sessions. ARGV: now ms, user.
# Removes the user when no live session is left; 1 for one caller only, so one "left" message.
_REMOVE_IF_GONE = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[2]) == 0 and redis.call('ZREM', KEYS[1], ARGV[2]) == 1 then return 1 end
return 0
"""

# KEYS: the set of rooms with presence, then each room's users. ARGV: now ms, then per room its
# user-sessions key prefix and its id.
# The periodic sweep of many rooms in one round trip: removes users whose heartbeats all expired
# and returns them as (room index, user) pairs, flattened; a user is returned by one caller only.
# A room left with nobody leaves the set, so the sweep covers the rooms people are in, not every
# room anyone ever entered (an enter adds it back in the same script that adds the user).
_SWEEP_GONE = """
local gone = {}
for i = 2, #KEYS do
  local key, prefix, room = KEYS[i], ARGV[2 * i - 2], ARGV[2 * i - 1]
  for _, user in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', ARGV[1])) do
    local sessions = prefix .. user
    redis.call('ZREMRANGEBYSCORE', sessions, '-inf', ARGV[1])
    if redis.call('ZCARD', sessions) == 0 and redis.call('ZREM', key, user) == 1 then
      table.insert(gone, i - 1)
      table.insert(gone, user)
    end
  end
  if redis.call('EXISTS', key) == 0 then redis.call('SREM', KEYS[1], room) end
end
return gone
"""

_MEMBER_COUNTS = """
local counts = {}
for i, key in ipairs(KEYS) do counts[i] = redis.call('ZCOUNT', key, ARGV[1], '+inf') end
return counts
"""

_LOCK_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""

_LOCK_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class CacheUnavailable(Exception):
    """Redis did not answer in time; callers degrade (chat goes on without Redis)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class RedisStore:
    def __init__(
        self,
        client: coredis.Redis[bytes],
        namespace: str,
        after_failure: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._ns = namespace
        self._after_failure = after_failure
        self._scripts = {
            name: client.register_script(source)
            for name, source in {
                "cache_messages": _CACHE_MESSAGES,
                "recent": _RECENT_MESSAGES,
                "last_seq": _LAST_SEQ,
                "enter": _ENTER,
                "heartbeat": _HEARTBEAT,
                "leave": _LEAVE,
                "remove_if_gone": _REMOVE_IF_GONE,
                "sweep_gone": _SWEEP_GONE,
                "member_counts": _MEMBER_COUNTS,
                "lock_acquire": _LOCK_ACQUIRE,
                "lock_release": _LOCK_RELEASE,
            }.items()
        }

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[ScriptArg]) -> Any:
        """The script's reply, as the script built it (nested lists of bytes and integers)."""
        return await self._call(self._scripts[name](keys=list(keys), args=list(args)))

    async def _call(self, request: Awaitable[T]) -> T:
        try:
            with trio.fail_after(REDIS_TIMEOUT):
                return await request
        except (coredis.exceptions.RedisError, OSError, trio.TooSlowError) as exc:
            if self._after_failure is not None:
                await self._after_failure()
            raise CacheUnavailable(f"Redis unavailable: {exc!r}") from exc

    # Keys -------------------------------------------------------------------------------------

    def _recent_key(self, room_id: int) -> str:
        return f"{self._ns}:recent:{room_id}"

    def _room_users_key(self, room_id: int) -> str:
        return f"{self._ns}:presence:{room_id}:users"

    def _user_sessions_prefix(self, room_id: int) -> str:
        return f"{self._ns}:presence:{room_id}:user:"

    @property
    def _presence_rooms_key(self) -> str:
        return f"{self._ns}:presence:rooms"

    # Recent messages --------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._call(self._client.ping())

    async def cache_messages(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        args: list[ScriptArg] = [RECENT_PER_ROOM]
        for m in messages:
            args += [m.seq, json_encoder.encode(m)]
        await self._script("cache_messages", [self._recent_key(m.room_id) for m in messages], args)

    async def forget_recent(self, room_ids: Sequence[int]) -> None:
        """Drop rooms' caches that may have holes (a cache write failed for them)."""
        if room_ids:
            await self._call(self._client.delete([self._recent_key(r) for r in room_ids]))

    async def recent_messages(self, room_id: int, since: int) -> tuple[int | None, list[Message]]:
        """(oldest cached seq or None when nothing is cached, cached messages with seq > since)."""
        reply = await self._script("recent", [self._recent_key(room_id)], [since])
        if not reply:
            return None, []
        oldest, *items = reply
        return int(float(oldest)), [message_decoder.decode(item) for item in items]

    async def last_seq(self, room_id: int) -> int | None:
        reply = await self._script("last_seq", [self._recent_key(room_id)], [])
        return None if reply is None else int(float(reply))

    # Rooms and users cache --------------------------------------------------------------------

    async def cache_room(self, room: Room) -> None:
        await self._call(self._client.hset(f"{self._ns}:rooms", {str(room.id): json_encoder.encode(room)}))

    async def cached_rooms(self) -> list[Room]:
        values = await self._call(self._client.hvals(f"{self._ns}:rooms"))
        rooms = [msgspec.json.decode(v, type=Room) for v in values]
        return sorted(rooms, key=lambda room: room.id)

    async def cached_room(self, room_id: int) -> Room | None:
        value = await self._call(self._client.hget(f"{self._ns}:rooms", str(room_id)))
        return None if value is None else msgspec.json.decode(value, type=Room)

    async def cache_users(self, user_ids: Sequence[str]) -> None:
        if user_ids:
            await self._call(self._client.sadd(f"{self._ns}:users", user_ids))

    # Presence ---------------------------------------------------------------------------------

    async def enter(self, entries: Sequence[tuple[int, str, str]], ttl: float) -> list[bool]:
        """Record (room, user, session) entries, in order; per entry True when the user was not in
        the room on any node."""
        if not entries:
            return []
        keys = [self._presence_rooms_key]
        args: list[ScriptArg] = [_now_ms() + int(ttl * 1000)]
        for room_id, user_id, session_id in entries:
            keys += [self._room_users_key(room_id), self._user_sessions_prefix(room_id) + user_id]
            args += [user_id, session_id, room_id]
        return [bool(flag) for flag in await self._script("enter", keys, args)]

    async def heartbeat(self, memberships: Sequence[tuple[int, str, str]], ttl: float) -> None:
        """Extend (room, user, session) memberships by `ttl` seconds."""
        if not memberships:
            return
        keys: list[str] = []
        args: list[ScriptArg] = [_now_ms() + int(ttl * 1000)]
        for room_id, user_id, session_id in memberships:
            keys += [self._room_users_key(room_id), self._user_sessions_prefix(room_id) + user_id]
            args += [user_id, session_id]
        await self._script("heartbeat", keys, args)

    async def leave(self, entries: Sequence[tuple[int, str, str]], grace: float) -> list[int]:
        """Forget (room, user, session) entries, in order; per entry the user's live sessions left
        in the room."""
        if not entries:
            return []
        keys: list[str] = []
        now = _now_ms()
        args: list[ScriptArg] = [now, now + int(grace * 1000)]
        for room_id, user_id, session_id in entries:
            keys += [self._room_users_key(room_id), self._user_sessions_prefix(room_id) + user_id]
            args += [user_id, session_id]
        return [int(left) for left in await self._script("leave", keys, args)]

    async def remove_if_gone(self, room_id: int, user_id: str) -> bool:
        """Remove the user from the room when no live session is left; True when this call did."""
        keys = [self._room_users_key(room_id), self._user_sessions_prefix(room_id) + user_id]
        return bool(await self._script("remove_if_gone", keys, [_now_ms(), user_id]))

    async def sweep_gone(self, room_ids: Sequence[int]) -> list[tuple[int, str]]:
        """Remove every user whose sessions all expired, in these rooms; returns (room, user).
        A room with nobody left in it leaves `presence_rooms`."""
        if not room_ids:
            return []
        keys = [self._presence_rooms_key, *(self._room_users_key(room_id) for room_id in room_ids)]
        args: list[ScriptArg] = [_now_ms()]
        for room_id in room_ids:
            args += [self._user_sessions_prefix(room_id), room_id]
        reply = await self._script("sweep_gone", keys, args)
        return [(room_ids[int(index) - 1], user.decode()) for index, user in zip(reply[::2], reply[1::2])]

    async def presence_rooms(self) -> list[int]:
        return [int(r) for r in await self._call(self._client.smembers(self._presence_rooms_key))]

    async def members(self, room_id: int) -> list[str]:
        users = await self._call(
            self._client.zrange(self._room_users_key(room_id), _now_ms(), "+inf", sortby=coredis.PureToken.BYSCORE)
        )
        return sorted(u.decode() for u in users)

    async def member_counts(self, room_ids: Sequence[int]) -> dict[int, int]:
        if not room_ids:
            return {}
        counts = await self._script("member_counts", [self._room_users_key(r) for r in room_ids], [_now_ms()])
        return dict(zip(room_ids, (int(c) for c in counts)))

    # The outbox lock --------------------------------------------------------------------------

    async def hold_lock(self, name: str, owner: str, ttl: float) -> bool:
        """Take the lock, or extend it if we hold it; False when someone else holds it."""
        return bool(await self._script("lock_acquire", [f"{self._ns}:lock:{name}"], [owner, int(ttl * 1000)]))

    async def release_lock(self, name: str, owner: str) -> None:
        await self._script("lock_release", [f"{self._ns}:lock:{name}"], [owner])


class RedisMisconfigured(Exception):
    """The Redis URL is malformed, or its Sentinels know no primary: the node cannot start."""


@dataclasses.dataclass(frozen=True)
class SentinelUrl:
    """`redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]`: the Sentinels to ask, the name
    they monitor the primary under, and the database number (default 0)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0


def parse_sentinel_url(url: str) -> SentinelUrl:
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise RedisMisconfigured(f"not a {SENTINEL_SCHEME}:// URL: {url!r}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise RedisMisconfigured(f"{url!r}: query, fragment and credentials are not supported")
    sentinels = tuple(_sentinel_address(url, entry) for entry in parts.netloc.split(","))
    path = [segment for segment in parts.path.split("/") if segment]
    if not 1 <= len(path) <= 2:
        raise RedisMisconfigured(f"{url!r}: the path must be /SERVICE or /SERVICE/DB")
    if len(path) == 2 and not path[1].isdigit():
        raise RedisMisconfigured(f"{url!r}: the database must be a number, got {path[1]!r}")
    return SentinelUrl(sentinels, path[0], int(path[1]) if len(path) == 2 else 0)


def _sentinel_address(url: str, entry: str) -> tuple[str, int]:
    host, _, port = entry.strip().rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisMisconfigured(f"{url!r}: each Sentinel must be HOST:PORT, got {entry!r}")
    return host, int(port)


async def _require_primary(sentinel: coredis.Sentinel[bytes], config: SentinelUrl) -> tuple[str, int]:
    """Ask the Sentinels for the primary once at start, so a wrong URL fails the node at once."""
    named = ", ".join(f"{host}:{port}" for host, port in config.sentinels)
    try:
        with trio.fail_after(REDIS_TIMEOUT * (len(config.sentinels) + 1)):
            return await sentinel.discover_primary(config.service)
    except coredis.exceptions.PrimaryNotFoundError:
        raise RedisMisconfigured(
            f"no Sentinel of {named} answered with a primary for service {config.service!r}"
            " (unreachable, or not monitoring that name)"
        ) from None
    except (coredis.exceptions.RedisError, OSError, trio.TooSlowError) as exc:
        raise RedisMisconfigured(f"the Sentinels {named} did not answer as Sentinels: {exc!r}") from exc


class PrimaryRecheck:
    """After a failed call, ask the Sentinels whether the primary moved (at most once a second).

    The pool learns of a new primary only when it opens a connection, but its connections to a
    primary that hangs (SIGSTOP, a frozen VM) stay open, and every command on them times out
    until the old server wakes up. When the Sentinels name another primary, the pool drops
    those connections, so the next call connects to the new one.
    """

    def __init__(self, pool: coredis.SentinelConnectionPool) -> None:
        self._pool = pool
        self._next = 0.0

    async def __call__(self) -> None:
        now = trio.current_time()
        if now < self._next:
            return
        self._next = now + PRIMARY_RECHECK_INTERVAL
        with trio.move_on_after(REDIS_TIMEOUT):
            try:
                await self._pool.get_primary_location()  # drops the pool's connections when it moved
            except (coredis.exceptions.RedisError, OSError) as exc:
                log.debug("asking the Sentinels for the primary failed: %r", exc)


@asynccontextmanager
async def _open_sentinel_primary(config: SentinelUrl) -> AsyncIterator[coredis.Redis[bytes]]:
    """A client of whichever server the Sentinels name primary: each new connection asks them,
    and a failover closes the connections to the old one, so the node follows without a restart."""
    timeouts = {"connect_timeout": REDIS_TIMEOUT, "stream_timeout": REDIS_TIMEOUT}
    sentinel = coredis.Sentinel(
        [TCPLocation(host, port) for host, port in config.sentinels],
        sentinel_kwargs=dict(timeouts),
        decode_responses=False,
        connect_timeout=REDIS_TIMEOUT,
        stream_timeout=REDIS_TIMEOUT,
    )
    async with sentinel:
        host, port = await _require_primary(sentinel, config)
        log.info("Redis primary found through Sentinel", extra={"primary": f"{host}:{port}", "service": config.service})
        async with sentinel.primary_for(config.service, db=config.db) as client:
            yield client


@asynccontextmanager
async def open_redis(url: str, namespace: str) -> AsyncIterator[RedisStore]:
    """`url` is redis://... for one server, or redis+sentinel://... (SentinelUrl) for a primary
    found through Sentinel."""
    if url.startswith(SENTINEL_SCHEME + ":"):
        async with _open_sentinel_primary(parse_sentinel_url(url)) as client:
            pool = client.connection_pool
            assert isinstance(pool, coredis.SentinelConnectionPool)
            yield RedisStore(client, namespace, PrimaryRecheck(pool))
        return
    client = coredis.Redis.from_url(
        url, decode_responses=False, connect_timeout=REDIS_TIMEOUT, stream_timeout=REDIS_TIMEOUT
    )
    async with client:
        yield RedisStore(client, namespace)
