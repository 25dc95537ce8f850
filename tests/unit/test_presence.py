"""Presence on in-memory storage: joins and leaves decided once across nodes, under Trio's mock clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from chattrio import presence
from chattrio.roomlog import RECENT_PER_ROOM
from unit.harness import CoreNode, RecordingSession, Shared

POLL = 0.05
WAIT_LIMIT = 600  # seconds of Trio's mock clock: a wrong outcome fails instead of waiting forever


def _announcements(shared: Shared, user_id: str) -> list[str]:
    records = [record for partition in shared.log.partitions for record, _ in partition]
    return [r.kind for r in records if r.sender_id == user_id and r.kind in ("join", "leave")]


async def _wait_for(shared: Shared, user_id: str, kinds: list[str]) -> None:
    with trio.fail_after(WAIT_LIMIT):
        while _announcements(shared, user_id) != kinds:
            await trio.sleep(POLL)


async def _until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(WAIT_LIMIT):
        while not condition():
            await trio.sleep(POLL)


async def _marker(node: CoreNode, room: int, user_id: str) -> None:
    """A join decided after everything queued before it: once it is announced, so is the rest."""
    await node.subscribe(RecordingSession(user_id), room)
    await _wait_for(node.shared, user_id, ["join"])


async def _room(shared: Shared) -> int:
    return (await shared.db.create_room("presence", "alice")).id


@asynccontextmanager
async def _two_nodes() -> AsyncIterator[tuple[Shared, CoreNode, CoreNode, int]]:
    """Two nodes with presence running, sharing the services, and a room; presence stops at the end."""
    shared = Shared()
    a, b = CoreNode(shared, "a"), CoreNode(shared, "b")
    room = await _room(shared)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.presence.run)
        await nursery.start(b.presence.run)
        yield shared, a, b, room
        nursery.cancel_scope.cancel()


async def test_a_user_on_two_nodes_joins_once(autojump_clock):
    async with _two_nodes() as (shared, a, b, room):
        await a.subscribe(RecordingSession("alice"), room)
        await _wait_for(shared, "alice", ["join"])
        await b.subscribe(RecordingSession("alice"), room)
        await _marker(b, room, "marker")
    assert _announcements(shared, "alice") == ["join"]


async def test_a_reconnect_within_the_grace_announces_nothing(autojump_clock):
    async with _two_nodes() as (shared, a, b, room):
        first = RecordingSession("alice")
        await a.subscribe(first, room)
        await _wait_for(shared, "alice", ["join"])
        a.chat.disconnected(first)
        await trio.sleep(shared.settings.leave_grace_seconds / 2)
        await b.subscribe(RecordingSession("alice"), room)  # back, on another node
        await trio.sleep(shared.settings.leave_grace_seconds * 2)
        await _marker(a, room, "marker")
    assert _announcements(shared, "alice") == ["join"]


async def test_a_user_gone_for_the_grace_leaves_once(autojump_clock):
    async with _two_nodes() as (shared, a, b, room):
        on_a, on_b = RecordingSession("alice"), RecordingSession("alice")
        await a.subscribe(on_a, room)
        await b.subscribe(on_b, room)
        await _wait_for(shared, "alice", ["join"])
        a.chat.disconnected(on_a)
        b.chat.disconnected(on_b)
        await _wait_for(shared, "alice", ["join", "leave"])
        await trio.sleep(shared.settings.presence_ttl_seconds * 2)  # sweeps run meanwhile
        await _marker(a, room, "marker")
    assert _announcements(shared, "alice") == ["join", "leave"]
    assert await shared.cache.members(room) == ["marker"]


async def test_the_users_of_a_dead_node_leave_once_their_heartbeats_expire(autojump_clock):
    shared = Shared()
    alive, dead = CoreNode(shared, "alive"), CoreNode(shared, "dead")
    room = await _room(shared)
    async with trio.open_nursery() as nursery:
        await nursery.start(alive.presence.run)
        await alive.subscribe(RecordingSession("bob"), room)
        async with trio.open_nursery() as doomed:
            await doomed.start(dead.presence.run)
            await dead.subscribe(RecordingSession("alice"), room)
            await _wait_for(shared, "alice", ["join"])
            doomed.cancel_scope.cancel()  # the node dies: no heartbeat, no leave of its own
        await _wait_for(shared, "alice", ["join", "leave"])
        await trio.sleep(shared.settings.presence_ttl_seconds * 2)
        await _marker(alive, room, "marker")
        nursery.cancel_scope.cancel()
    assert _announcements(shared, "alice") == ["join", "leave"]
    assert _announcements(shared, "bob") == ["join"]  # the live node's heartbeats keep bob


async def test_a_mass_disconnect_over_the_change_queue_still_announces_each_leave_once(autojump_clock, monkeypatch):
    """More leaves at once than the change queue holds: the ones it drops never reach Redis, so
    their heartbeats expire and the sweep announces them, more at once than the announcement queue
    holds. Every user leaves once, no more."""
    monkeypatch.setattr(presence, "PENDING_CHANGES", 4)
    monkeypatch.setattr(presence, "PENDING_ANNOUNCEMENTS", 4)
    shared = Shared()
    node = CoreNode(shared, "a")
    room = await _room(shared)
    users = [f"user-{n}" for n in range(12)]
    async with trio.open_nursery() as nursery:
        await nursery.start(node.presence.run)
        sessions = [RecordingSession(user) for user in users]
        for session in sessions:
            await node.subscribe(session, room)
            await _wait_for(shared, session.user_id, ["join"])
        for session in sessions:  # all in one go: the queue cannot drain in between
            node.chat.disconnected(session)
        assert node.metrics.counter("chattrio_presence_dropped_total", "").value() == len(users) - 4
        for user in users:
            await _wait_for(shared, user, ["join", "leave"])
        await trio.sleep(shared.settings.presence_ttl_seconds * 2)  # more sweeps and grace checks
        await _marker(node, room, "marker")
        nursery.cancel_scope.cancel()
    assert {user: _announcements(shared, user) for user in users} == {user: ["join", "leave"] for user in users}
    assert await shared.cache.members(room) == ["marker"]


async def test_a_resubscribe_that_fails_leaves_the_room_after_the_grace(autojump_clock):
    async with _two_nodes() as (shared, a, _, room):
        alice = RecordingSession("alice")
        await a.subscribe(alice, room)
        acks = [await a.send(alice, room, f"m{i}") for i in range(RECENT_PER_ROOM + 10)]
        a.deliver()
        await _wait_for(shared, "alice", ["join"])
        answer = await a.subscribe(alice, room, since=acks[0]["seq"])  # nothing stored: unavailable
        assert answer["code"] == "UNAVAILABLE" and room not in alice.rooms
        # The heartbeat would expire only after TTL - TTL/BEATS_PER_TTL: the leave must come sooner.
        heartbeat_expiry = shared.settings.presence_ttl_seconds * (1 - 1 / presence.BEATS_PER_TTL)
        with trio.fail_after(heartbeat_expiry - 1):
            while _announcements(shared, "alice") != ["join", "leave"]:
                await trio.sleep(POLL)


async def test_changes_waiting_together_reach_the_store_in_one_call_each_kind(autojump_clock, monkeypatch):
    """Sessions that enter while presence is busy are recorded in one call, and each user still
    joins once; a second session of a user in the same batch makes no second join. Leaves that
    wait together go in one call too."""
    shared = Shared()
    node = CoreNode(shared, "a")
    room = await _room(shared)
    calls: list[tuple[str, int]] = []
    enter, leave = shared.cache.enter, shared.cache.leave

    async def counted_enter(entries, ttl):
        calls.append(("enter", len(entries)))
        return await enter(entries, ttl)

    async def counted_leave(entries, grace):
        calls.append(("leave", len(entries)))
        return await leave(entries, grace)

    monkeypatch.setattr(shared.cache, "enter", counted_enter)
    monkeypatch.setattr(shared.cache, "leave", counted_leave)
    users = [f"user-{n}" for n in range(30)]
    sessions = [RecordingSession(user) for user in users] + [RecordingSession("user-0")]
    for session in sessions:  # queued before presence runs: they wait together
        await node.subscribe(session, room)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.presence.run)
        for user in users:
            await _wait_for(shared, user, ["join"])
        for session in sessions:
            node.chat.disconnected(session)
        for user in users:
            await _wait_for(shared, user, ["join", "leave"])
        nursery.cancel_scope.cancel()
    assert calls == [("enter", len(sessions)), ("leave", len(sessions))]


async def test_changes_made_while_redis_is_away_are_announced_once_it_is_back(autojump_clock, monkeypatch):
    """Alice enters and Bob leaves while Redis refuses every call. Their changes wait and are
    tried again; heartbeats go on meanwhile. Once Redis answers, a heartbeat must not add Alice
    silently: her "joined" comes when her retried enter lands, and Bob's "left" follows after the
    grace."""
    monkeypatch.setattr(presence, "RETRY_FIRST", 60.0)  # a heartbeat reaches Redis before the retry
    monkeypatch.setattr(presence, "RETRY_MAX", 60.0)
    shared = Shared()
    node = CoreNode(shared, "a")
    room = await _room(shared)
    heartbeats: list[bool] = []  # per call: whether Redis answered it
    heartbeat = shared.cache.heartbeat

    async def recorded_heartbeat(memberships, ttl):
        heartbeats.append(not shared.cache.unavailable)
        return await heartbeat(memberships, ttl)

    monkeypatch.setattr(shared.cache, "heartbeat", recorded_heartbeat)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.presence.run)
        bob = RecordingSession("bob")
        await node.subscribe(bob, room)
        await _wait_for(shared, "bob", ["join"])
        shared.cache.unavailable = True
        await node.subscribe(RecordingSession("alice"), room)
        node.chat.disconnected(bob)
        await _until(lambda: heartbeats.count(False) >= 2)
        shared.cache.unavailable = False
        await _until(lambda: True in heartbeats[-1:])
        await _wait_for(shared, "alice", ["join"])
        await _wait_for(shared, "bob", ["join", "leave"])
        await _marker(node, room, "marker")
        nursery.cancel_scope.cancel()
    assert _announcements(shared, "alice") == ["join"]
    assert _announcements(shared, "bob") == ["join", "leave"]
    assert await shared.cache.members(room) == ["alice", "marker"]
    assert node.metrics.counter("chattrio_presence_dropped_total", "").value() == 0


async def test_an_enter_whose_answer_was_lost_is_tried_again_and_announced_once(autojump_clock, monkeypatch):
    """Redis applied the enter but its answer never came (a primary resumed after a SIGSTOP runs
    the commands queued meanwhile): the retry finds the session already there and still
    announces the join, once."""
    shared = Shared()
    node = CoreNode(shared, "a")
    room = await _room(shared)
    tries: list[bool] = []  # per enter call: whether its answer was lost
    enter = shared.cache.enter

    async def recorded_enter(entries, ttl):
        tries.append(shared.cache.answers_lost)
        return await enter(entries, ttl)

    monkeypatch.setattr(shared.cache, "enter", recorded_enter)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.presence.run)
        shared.cache.answers_lost = True
        await node.subscribe(RecordingSession("alice"), room)
        await _until(lambda: tries.count(True) >= 2)
        shared.cache.answers_lost = False
        await _wait_for(shared, "alice", ["join"])
        await node.subscribe(RecordingSession("alice"), room)  # another session of hers: no further join
        await _marker(node, room, "marker")
        nursery.cancel_scope.cancel()
    assert _announcements(shared, "alice") == ["join"]


async def test_a_join_kafka_refused_is_produced_when_it_is_back_with_the_same_id(autojump_clock, monkeypatch):
    """Kafka refuses the join for a while: it is tried again, in order, and every try carries the
    same message id, so a try that reached Kafka after all would be dropped as a repeat."""
    shared = Shared()
    node = CoreNode(shared, "a")
    room = await _room(shared)
    tries: list[tuple[str, bool]] = []  # per produce: the record's id, and whether Kafka was away
    produce = shared.log.produce

    async def recorded_produce(record):
        tries.append((record.id, shared.log.unavailable))
        return await produce(record)

    monkeypatch.setattr(shared.log, "produce", recorded_produce)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.presence.run)
        shared.log.unavailable = True
        await node.subscribe(RecordingSession("alice"), room)
        await _until(lambda: [away for _, away in tries].count(True) >= 3)
        shared.log.unavailable = False
        await _wait_for(shared, "alice", ["join"])
        await _marker(node, room, "marker")
        nursery.cancel_scope.cancel()
    assert _announcements(shared, "alice") == ["join"]
    alice_ids = {record_id for record_id, _ in tries[:-1]}  # the marker's join is the last try
    assert len(alice_ids) == 1
    assert node.metrics.counter("chattrio_announcements_dropped_total", "").value() == 0


def _change(entered: bool, session: str, room: int = 1) -> presence._Change:
    return presence._Change(entered, room, f"user-{session}", session)


async def test_a_run_put_back_goes_first_and_a_later_opposite_change_undoes_it():
    changes = presence.PendingChanges(limit=10)
    changes.put(_change(True, "a"))
    changes.put(_change(True, "b"))
    run = await changes.get_run(10)
    changes.put(_change(True, "c"))
    changes.put(_change(False, "b"))  # b left while its enter was on its way: Redis hears of neither
    changes.put_back(run)
    assert await changes.get_run(10) == [_change(True, "a"), _change(True, "c")]
    assert len(changes) == 0
