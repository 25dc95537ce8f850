"""Who is in which room, across nodes, and the "joined"/"left" system messages.

Presence lives in Redis with expiring heartbeats, so a killed node's sessions vanish on their
own. A user joins when their first connection enters a room on any node, and leaves when their
last connection has been gone for the grace period; Lua scripts make each decision once.
Without Redis, chat goes on; the changes of this node's sessions wait (bounded) and reach Redis
when it is back, so the "joined" and "left" messages of an outage come late, not never.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable

import trio

from chattrio.backoff import Backoff
from chattrio.config import Settings
from chattrio.metrics import Registry
from chattrio.models import ChatRecord
from chattrio.storage.contracts import MessageLog, PresenceStore
from chattrio.storage.kafka import KafkaUnavailable
from chattrio.storage.redis import CacheUnavailable
from chattrio.transport.sessions import Session, SessionRegistry

log = logging.getLogger(__name__)

PENDING_CHANGES = 10_000
# Joins and leaves waiting for Kafka. A leave is announced after Redis let the user go, so nothing
# would announce it again: the sweep after a node died (thousands of leaves at once) and the grace
# checks wait for room here rather than drop one. A join that finds the queue full is dropped.
PENDING_ANNOUNCEMENTS = 10_000
# Heartbeats (and sweeps for expired users) run three times per presence TTL, so a live session
# never expires between two heartbeats.
BEATS_PER_TTL = 3
SWEEP_ROOMS_PER_CALL = 200  # bounds how long one sweep script holds Redis
# Changes of one kind that wait together go to Redis in one script call: a burst of connections
# entering rooms costs a round trip per batch, not per SUBSCRIBE. This bounds how long one call
# holds Redis.
CHANGES_PER_CALL = 500
# Changes that Redis did not take, and announcements that Kafka did not, are tried again after a
# capped, jittered backoff.
RETRY_FIRST, RETRY_MAX = 0.5, 5.0


@dataclasses.dataclass(frozen=True)
class _Change:
    entered: bool
    room_id: int
    user_id: str
    session_id: str


class PendingChanges:
    """Presence changes waiting for Redis, at most one per (room, session), in arrival order.

    A session's changes in a room alternate (enter, leave, enter, ...), so a change arriving while
    the previous one still waits undoes it: both go, and Redis never hears of either. However
    fast one connection enters and leaves a room, it holds at most one place here, and the bound
    is left for everyone else's changes.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._changes: dict[tuple[int, str], _Change] = {}
        self._in_flight: frozenset[tuple[int, str]] = frozenset()  # the run taken, not yet applied
        self._arrived = trio.Event()

    def __len__(self) -> int:
        return len(self._changes)

    def waits(self, room_id: int, session_id: str) -> bool:
        """Whether a change of (room, session) has not reached Redis: queued, or in the run taken."""
        key = (room_id, session_id)
        return key in self._changes or key in self._in_flight

    def put(self, change: _Change) -> bool:
        """False when the change had to be dropped (the bound is reached)."""
        key = (change.room_id, change.session_id)
        waiting = self._changes.pop(key, None)
        if waiting is not None and waiting.entered != change.entered:
            return True
        if len(self._changes) >= self._limit:
            return False
        self._changes[key] = change
        self._arrived.set()
        return True

    async def get_run(self, limit: int) -> list[_Change]:
        """The oldest waiting changes, up to `limit` and as long as they are of one kind (all
        enters or all leaves), so that applying them together keeps the arrival order."""
        while not self._changes:
            self._arrived = trio.Event()
            await self._arrived.wait()
        run: list[_Change] = []
        for change in self._changes.values():
            if len(run) == limit or (run and change.entered != run[0].entered):
                break
            run.append(change)
        for change in run:
            del self._changes[(change.room_id, change.session_id)]
        self._in_flight = frozenset((change.room_id, change.session_id) for change in run)
        return run

    def applied(self) -> None:
        """The run taken last reached Redis."""
        self._in_flight = frozenset()

    def put_back(self, run: list[_Change]) -> None:
        """Return a run that could not be applied to the front, in its order. A change of the same
        session and room that arrived meanwhile undoes it, as in `put`; the bound is not checked,
        since these had their places already."""
        front: dict[tuple[int, str], _Change] = {}
        for change in run:
            key = (change.room_id, change.session_id)
            later = self._changes.get(key)
            if later is not None and later.entered != change.entered:
                del self._changes[key]
            else:
                front[key] = change
        front.update(self._changes)
        self._changes = front
        self._in_flight = frozenset()
        if front:
            self._arrived.set()


@dataclasses.dataclass(frozen=True)
class _Announcement:
    room_id: int
    user_id: str
    kind: str  # "join" or "leave"
    # Fixed once, so a retry of a produce that reached Kafka after all is the same message:
    # fan-outs and storage drop a repeated id.
    message_id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))


class Presence:
    def __init__(
        self,
        settings: Settings,
        cache: PresenceStore,
        sessions: SessionRegistry,
        producer: MessageLog,
        metrics: Registry,
    ) -> None:
        self._settings = settings
        self._cache = cache
        self._sessions = sessions
        self._producer = producer
        self._changes = PendingChanges(PENDING_CHANGES)
        self._checks_in, self._checks_out = trio.open_memory_channel[tuple[float, int, str]](PENDING_CHANGES)
        # Joins and leaves go to Kafka from a task of their own, in the order they were decided:
        # a produce waits for the broker (up to 5 s while it is away), and presence in Redis must
        # not wait with it.
        self._announcements_in, self._announcements_out = trio.open_memory_channel[_Announcement](PENDING_ANNOUNCEMENTS)
        self._dropped = metrics.counter(
            "chattrio_presence_dropped_total", "Presence changes not recorded (the change queue was full)"
        )
        self._announcements_dropped = metrics.counter(
            "chattrio_announcements_dropped_total",
            "Join messages not produced (the announcement queue was full)",
        )

    def entered(self, session: Session, room_id: int) -> None:
        self._queue(_Change(True, room_id, session.user_id, session.id))

    def left(self, session: Session, room_id: int) -> None:
        self._queue(_Change(False, room_id, session.user_id, session.id))

    def _queue(self, change: _Change) -> None:
        if not self._changes.put(change):
            self._dropped.inc()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._apply_changes)
            nursery.start_soon(self._check_after_grace)
            nursery.start_soon(self._publish_announcements)
            interval = self._settings.presence_ttl_seconds / BEATS_PER_TTL
            nursery.start_soon(self._every, interval, self._heartbeat)
            nursery.start_soon(self._every, interval, self._sweep)
            task_status.started()

    async def _apply_changes(self) -> None:
        """Apply waiting changes in order; a run Redis did not take goes back to wait for it."""
        backoff = Backoff(RETRY_FIRST, RETRY_MAX)
        while True:
            changes = await self._changes.get_run(CHANGES_PER_CALL)
            try:
                if changes[0].entered:
                    await self._enter(changes)
                else:
                    await self._leave(changes)
            except CacheUnavailable as exc:
                self._changes.put_back(changes)
                log.warning(
                    "%d presence changes wait for Redis, next try in %.1fs: %s", len(changes), backoff.delay, exc
                )
                await backoff.sleep()
                continue
            self._changes.applied()
            backoff.reset()

    async def _enter(self, changes: list[_Change]) -> None:
        ttl = self._settings.presence_ttl_seconds
        entries = [(change.room_id, change.user_id, change.session_id) for change in changes]
        for change, joined in zip(changes, await self._cache.enter(entries, ttl)):
            if joined:
                self._announce_join(change.room_id, change.user_id)

    async def _leave(self, changes: list[_Change]) -> None:
        grace = self._settings.leave_grace_seconds
        entries = [(change.room_id, change.user_id, change.session_id) for change in changes]
        for change, remaining in zip(changes, await self._cache.leave(entries, grace)):
            if remaining == 0:
                try:
                    self._checks_in.send_nowait((trio.current_time() + grace, change.room_id, change.user_id))
                except trio.WouldBlock:
                    self._dropped.inc()  # the sweeper announces the leave once the heartbeat expires

    async def _check_after_grace(self) -> None:
        # Every check waits the same grace, so the queue is in due order.
        async for due, room_id, user_id in self._checks_out:
            await trio.sleep_until(due)
            await self._announce_gone(room_id, user_id)

    async def _every(self, interval: float, action: Callable[[], Awaitable[None]]) -> None:
        while True:
            await trio.sleep(interval)
            try:
                await action()
            except CacheUnavailable as exc:
                log.warning("presence upkeep skipped: %s", exc)

    async def _heartbeat(self) -> None:
        """Extend this node's memberships, but not those whose enter has not reached Redis: the
        enter, not a heartbeat, must add them, or their "joined" would never be announced."""
        memberships = [
            (room_id, user_id, session_id)
            for room_id, user_id, session_id in self._sessions.memberships()
            if not self._changes.waits(room_id, session_id)
        ]
        await self._cache.heartbeat(memberships, self._settings.presence_ttl_seconds)

    async def _sweep(self) -> None:
        """Users of a node that died leave once their heartbeats expire; one call per many rooms."""
        rooms = await self._cache.presence_rooms()
        for start in range(0, len(rooms), SWEEP_ROOMS_PER_CALL):
            for room_id, user_id in await self._cache.sweep_gone(rooms[start : start + SWEEP_ROOMS_PER_CALL]):
                await self._announcements_in.send(_Announcement(room_id, user_id, "leave"))

    async def _announce_gone(self, room_id: int, user_id: str) -> None:
        try:
            gone = await self._cache.remove_if_gone(room_id, user_id)
        except CacheUnavailable as exc:
            log.warning("presence check skipped: %s", exc)
            return
        if gone:
            await self._announcements_in.send(_Announcement(room_id, user_id, "leave"))

    def _announce_join(self, room_id: int, user_id: str) -> None:
        """Without waiting: entering a room must not wait for Kafka."""
        try:
            self._announcements_in.send_nowait(_Announcement(room_id, user_id, "join"))
        except trio.WouldBlock:
            self._announcements_dropped.inc()

    async def _publish_announcements(self) -> None:
        """A join or leave goes the way chat messages go: Kafka first. One Kafka did not take is
        tried again (capped backoff), in order: the queue behind it waits, bounded."""
        async for item in self._announcements_out:
            record = ChatRecord(item.message_id, item.room_id, item.user_id, item.kind, "", None)
            backoff = Backoff(RETRY_FIRST, RETRY_MAX)
            while True:
                try:
                    await self._producer.produce(record)
                    break
                except KafkaUnavailable as exc:
                    log.warning(
                        "%s of %s in room %s waits for Kafka, next try in %.1fs: %s",
                        item.kind,
                        item.user_id,
                        item.room_id,
                        backoff.delay,
                        exc,
                    )
                    await backoff.sleep()
