"""The persistence consumer on in-memory storage: a rebalance mid-batch and redelivered records,
under Trio's mock clock."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from chattrio import persistence
from chattrio.metrics import Registry
from chattrio.models import ChatRecord, Message, Room, RoomCreated, UserCreated
from chattrio.persistence import Persistence
from chattrio.storage.kafka import ReadBatch
from unit.harness import Shared
from unit.memory import MemoryCache, MemoryDatabase, MemoryGroup, MemoryGroupMember

WAIT_LIMIT = 600  # seconds of Trio's mock clock: a wrong outcome fails instead of waiting forever


class HeldDatabase(MemoryDatabase):
    """Holds its first store of messages until `release` is set: a transaction still running."""

    def __init__(self) -> None:
        super().__init__()
        self.storing = trio.Event()
        self.release = trio.Event()

    async def store_messages(
        self, messages: Sequence[Message], topic: str, next_offsets: dict[int, int]
    ) -> list[Message]:
        if messages and not self.storing.is_set():
            self.storing.set()
            await self.release.wait()
        return await super().store_messages(messages, topic, next_offsets)


def _consumer(shared: Shared, db: MemoryDatabase, member: MemoryGroupMember) -> tuple[Persistence, Registry]:
    metrics = Registry()
    return Persistence(shared.settings, db, shared.cache, metrics, open_reader=member.open), metrics


def _count(metrics: Registry, name: str) -> float:
    return metrics.counter(name, "").value()


async def _produce(shared: Shared, count: int, first: int = 0) -> None:
    for n in range(first, first + count):
        await shared.log.produce(ChatRecord(f"id-{n}", 1 + n % 5, "alice", "chat", f"m{n}", None))


async def _until(condition) -> None:
    with trio.fail_after(WAIT_LIMIT):
        while not condition():
            await trio.sleep(persistence.FETCH_INTERVAL)


async def test_a_rebalance_mid_batch_loses_nothing_and_stores_nothing_twice(autojump_clock):
    shared = Shared()
    db = HeldDatabase()
    group = MemoryGroup(shared.log, shared.settings)
    first, second = group.member(), group.member()
    partitions = range(shared.settings.topic_partitions)
    group.assign(first, partitions)
    first_consumer, first_metrics = _consumer(shared, db, first)
    second_consumer, second_metrics = _consumer(shared, db, second)
    await _produce(shared, 20)
    async with trio.open_nursery() as nursery:
        await nursery.start(first_consumer.run)
        await db.storing.wait()  # the first member is storing its batch...
        group.assign(second, partitions)  # ...when the group gives its partitions to the second
        await nursery.start(second_consumer.run)
        await _until(lambda: group.committed == group.ends())
        db.release.set()  # the first member's transaction ends, after the second stored it all
        await _until(lambda: first.refused_commits == 1)
        await _produce(shared, 10, first=20)
        await _until(lambda: group.committed == group.ends())
        nursery.cancel_scope.cancel()
    assert sorted(db.messages) == sorted(f"id-{n}" for n in range(30))
    assert _count(second_metrics, "chattrio_messages_stored_total") == 30
    assert _count(first_metrics, "chattrio_messages_stored_total") == 0
    assert _count(first_metrics, "chattrio_messages_redelivered_total") == 20
    assert db.stored_offsets == group.ends()


async def test_records_delivered_twice_are_stored_once(autojump_clock):
    shared = Shared()
    db = MemoryDatabase()
    group = MemoryGroup(shared.log, shared.settings)
    member = group.member()
    partitions = range(shared.settings.topic_partitions)
    group.assign(member, partitions)
    group.lose_commits = True  # stored, then gone before the commit: the group reads them again
    consumer, metrics = _consumer(shared, db, member)
    await _produce(shared, 12)
    async with trio.open_nursery() as nursery:
        await nursery.start(consumer.run)
        await _until(lambda: len(db.messages) == 12)
        group.assign(member, partitions)  # back to the committed offsets: everything again
        await _until(lambda: _count(metrics, "chattrio_messages_redelivered_total") == 12)
        group.lose_commits = False
        await _produce(shared, 3, first=12)
        await _until(lambda: len(db.messages) == 15)
        nursery.cancel_scope.cancel()
    assert sorted(db.messages) == sorted(f"id-{n}" for n in range(15))
    assert _count(metrics, "chattrio_messages_stored_total") == 15
    cached = [m.id for room in shared.cache.recent.values() for m in room.values()]
    assert sorted(cached) == sorted(db.messages)


class CountingCache(MemoryCache):
    """Counts the commands that cache new users."""

    def __init__(self) -> None:
        super().__init__()
        self.user_commands = 0

    async def cache_users(self, user_ids: Sequence[str]) -> None:
        self.user_commands += bool(user_ids)
        await super().cache_users(user_ids)


async def test_the_new_users_of_a_batch_are_cached_with_one_command():
    shared = Shared()
    shared.cache = cache = CountingCache()
    users = [f"user-{n}" for n in range(50)]
    room = Room(7, "seven", "user-0", "2026-12-03T00:00:00")
    events = [UserCreated(f"event-{n}", user, "2026-12-03T00:00:00") for n, user in enumerate(users)]
    events.insert(10, RoomCreated("event-room", room))
    consumer, _ = _consumer(shared, MemoryDatabase(), MemoryGroup(shared.log, shared.settings).member())
    await consumer._cache_events(ReadBatch([], events, {}))
    assert cache.users == set(users)
    assert cache.user_commands == 1
    assert await cache.cached_room(7) == room
