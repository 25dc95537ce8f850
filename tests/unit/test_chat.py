"""ChatService on in-memory storage: resume without gaps, dedupe, and the error paths."""

from __future__ import annotations

import trio

from chattrio import chat, roomlog
from chattrio.roomlog import RECENT_PER_ROOM
from chattrio.storage.kafka import partition_of
from chattrio.storage.postgres import DatabaseUnavailable
from unit.harness import CoreNode, RecordingSession, Shared


async def _room_with_messages(node: CoreNode, count: int) -> tuple[int, RecordingSession, list[dict]]:
    room = await node.shared.db.create_room("unit", "alice")
    alice = RecordingSession("alice")
    await node.subscribe(alice, room.id)
    acks = [await node.send(alice, room.id, f"m{i}") for i in range(count)]
    node.deliver()
    return room.id, alice, acks


async def _store_everything(shared: Shared) -> None:
    batch = shared.log.read({})
    offsets = {p: len(records) for p, records in enumerate(shared.log.partitions)}
    await shared.db.store_messages([m for _, m in batch.messages], shared.settings.messages_topic, offsets)


async def test_a_resume_within_the_room_log_sends_what_followed_and_then_goes_live():
    node = CoreNode(Shared())
    room, alice, acks = await _room_with_messages(node, 5)
    bob = RecordingSession("bob")
    subscribed = await node.subscribe(bob, room, since=acks[1]["seq"])
    assert bob.texts(room) == ["m2", "m3", "m4"]
    assert subscribed["type"] == "SUBSCRIBED" and subscribed["lastSeq"] == acks[-1]["seq"]
    await node.send(alice, room, "live")
    node.deliver()
    assert bob.texts(room) == ["m2", "m3", "m4", "live"]


async def test_a_resume_older_than_the_room_log_reads_stored_pages_first():
    shared = Shared()
    node = CoreNode(shared)
    count = RECENT_PER_ROOM + 40
    room, _, acks = await _room_with_messages(node, count)
    await _store_everything(shared)
    bob = RecordingSession("bob")
    subscribed = await node.subscribe(bob, room, since=acks[0]["seq"])
    assert bob.texts(room) == [f"m{i}" for i in range(1, count)]
    assert subscribed["lastSeq"] == acks[-1]["seq"]


async def test_a_resume_that_storage_cannot_serve_yet_waits_then_answers_unavailable(autojump_clock):
    node = CoreNode(Shared())
    room, _, acks = await _room_with_messages(node, RECENT_PER_ROOM + 10)  # nothing stored
    bob = RecordingSession("bob")
    answer = await node.subscribe(bob, room, since=acks[0]["seq"])
    assert answer["type"] == "ERROR" and answer["code"] == "UNAVAILABLE"
    assert "not stored yet" in answer["message"]
    assert room not in bob.rooms


async def test_a_resume_that_waits_for_storage_completes_once_it_is_stored(autojump_clock):
    shared = Shared()
    node = CoreNode(shared)
    count = RECENT_PER_ROOM + 10
    room, _, acks = await _room_with_messages(node, count)
    bob = RecordingSession("bob")
    async with trio.open_nursery() as nursery:

        async def store_later() -> None:
            await trio.sleep(chat.RESUME_CATCH_UP_TIMEOUT / 2)
            await _store_everything(shared)

        nursery.start_soon(store_later)
        answer = await node.subscribe(bob, room, since=acks[0]["seq"])
    assert answer["type"] == "SUBSCRIBED"
    assert bob.texts(room) == [f"m{i}" for i in range(1, count)]


async def test_a_resume_of_a_room_the_log_no_longer_remembers_waits_for_storage_past_the_floor(
    autojump_clock, monkeypatch
):
    """Past FORGOTTEN_REMEMBERED rooms, the log keeps only a partition's floor of what it
    dropped; a resume of such a room must still wait for storage to have it all."""
    monkeypatch.setattr(roomlog, "ROOMS_REMEMBERED", 1)
    monkeypatch.setattr(roomlog, "FORGOTTEN_REMEMBERED", 1)
    shared = Shared()
    node = CoreNode(shared)
    partitions = shared.settings.topic_partitions
    rooms: list[int] = []
    while len(rooms) < 3:  # three rooms of one partition
        room = (await shared.db.create_room(f"r{len(rooms)}", "alice")).id
        if not rooms or partition_of(room, partitions) == partition_of(rooms[0], partitions):
            rooms.append(room)
    alice = RecordingSession("alice")
    for room in rooms:
        await node.subscribe(alice, room)
    first = await node.send(alice, rooms[0], "stored")
    node.deliver()
    await _store_everything(shared)
    await node.send(alice, rooms[0], "not stored yet")
    for room in rooms[1:]:  # the first room's tail, then its entry, are forgotten
        await node.send(alice, room, "elsewhere")
        node.deliver()
    assert node.room_log.dropped(rooms[0]) is None and node.room_log.dropped_floor(rooms[0]) is not None
    bob = RecordingSession("bob")
    async with trio.open_nursery() as nursery:

        async def store_later() -> None:
            await trio.sleep(chat.RESUME_CATCH_UP_TIMEOUT / 2)
            assert bob.texts(rooms[0]) == []  # nothing before storage has it
            await _store_everything(shared)

        nursery.start_soon(store_later)
        answer = await node.subscribe(bob, rooms[0], since=first["seq"])
    assert answer["type"] == "SUBSCRIBED"
    assert bob.texts(rooms[0]) == ["not stored yet"]


def _count_last_seq_lookups(shared: Shared, monkeypatch) -> list[int]:
    asked: list[int] = []
    lookup = shared.db.last_seq

    async def counted(room_id: int) -> int | None:
        asked.append(room_id)
        return await lookup(room_id)

    monkeypatch.setattr(shared.db, "last_seq", counted)
    return asked


async def test_sessions_entering_a_quiet_room_ask_storage_once_for_its_newest_seq(monkeypatch):
    shared = Shared()
    first = CoreNode(shared)
    room, alice, acks = await _room_with_messages(first, 3)
    await _store_everything(shared)
    later = CoreNode(shared, "node-2", start_at_end=True)  # its fan-out starts after those messages
    asked = _count_last_seq_lookups(shared, monkeypatch)
    for user in ("bob", "carol", "dave"):
        answer = await later.subscribe(RecordingSession(user), room)
        assert answer["type"] == "SUBSCRIBED" and answer["lastSeq"] == acks[-1]["seq"]
    assert asked == [room]
    newest = await first.send(alice, room, "after the quiet")
    later.deliver()
    assert (await later.subscribe(RecordingSession("erin"), room))["lastSeq"] == newest["seq"]


async def test_a_quiet_room_is_asked_again_while_storage_is_short_of_the_fan_outs_start(monkeypatch):
    shared = Shared()
    first = CoreNode(shared)
    room, _, acks = await _room_with_messages(first, 3)  # nothing stored yet
    later = CoreNode(shared, "node-2", start_at_end=True)
    asked = _count_last_seq_lookups(shared, monkeypatch)
    assert (await later.subscribe(RecordingSession("bob"), room))["lastSeq"] is None
    await _store_everything(shared)
    assert (await later.subscribe(RecordingSession("carol"), room))["lastSeq"] == acks[-1]["seq"]
    assert (await later.subscribe(RecordingSession("dave"), room))["lastSeq"] == acks[-1]["seq"]
    assert asked == [room, room]  # remembered only once storage held the partition up to the start


async def test_a_quiet_rooms_message_stored_before_the_fan_out_read_it_is_not_claimed(monkeypatch):
    shared = Shared()
    first = CoreNode(shared)
    room, alice, acks = await _room_with_messages(first, 3)
    later = CoreNode(shared, "node-2", start_at_end=True)
    ahead = await first.send(alice, room, "stored, not read by node-2 yet")
    await _store_everything(shared)
    asked = _count_last_seq_lookups(shared, monkeypatch)
    for user in ("bob", "carol"):
        # What node-2's fan-out has not passed comes live: lastSeq stops before it.
        assert (await later.subscribe(RecordingSession(user), room))["lastSeq"] == acks[-1]["seq"]
    assert asked == [room, room]  # a seq past the start is not remembered
    later.deliver()
    bob = RecordingSession("bob")
    assert (await later.subscribe(bob, room))["lastSeq"] == ahead["seq"]


async def _stored_room_and_a_later_node() -> tuple[Shared, int, int, CoreNode]:
    """A room with three stored messages (the newest seq returned) that the Redis cache does not
    hold, and a node whose fan-out started after them."""
    shared = Shared()
    room, _, acks = await _room_with_messages(CoreNode(shared), 3)
    await _store_everything(shared)
    return shared, room, acks[-1]["seq"], CoreNode(shared, "node-2", start_at_end=True)


async def _cache_room(shared: Shared, room: int) -> None:
    await shared.cache.cache_messages(await shared.db.messages_after(room, 0, 10, 10_000))


async def test_a_quiet_room_whose_database_lookup_fails_falls_back_to_the_cache_alone(monkeypatch):
    shared, room, newest, later = await _stored_room_and_a_later_node()
    asked: list[int] = []

    async def database_lost(room_id: int) -> int | None:
        asked.append(room_id)
        raise DatabaseUnavailable("lost mid-call")

    monkeypatch.setattr(shared.db, "last_seq", database_lost)
    assert (await later.subscribe(RecordingSession("bob"), room))["lastSeq"] is None
    assert asked == [room]  # the failed database is not asked a second time
    await _cache_room(shared, room)
    assert (await later.subscribe(RecordingSession("carol"), room))["lastSeq"] == newest
    assert asked == [room, room]


async def test_a_quiet_room_whose_stored_offset_lookup_fails_asks_the_cache_alone(monkeypatch):
    shared, room, newest, later = await _stored_room_and_a_later_node()
    asked = _count_last_seq_lookups(shared, monkeypatch)

    async def database_lost(topic: str, partition: int) -> int | None:
        raise DatabaseUnavailable("lost mid-call")

    monkeypatch.setattr(shared.db, "stored_offset", database_lost)
    assert (await later.subscribe(RecordingSession("bob"), room))["lastSeq"] is None
    assert asked == []  # the database that just failed is not asked again
    await _cache_room(shared, room)
    assert (await later.subscribe(RecordingSession("carol"), room))["lastSeq"] == newest


async def test_a_resume_with_the_database_down_answers_unavailable():
    shared = Shared()
    node = CoreNode(shared)
    room, _, acks = await _room_with_messages(node, RECENT_PER_ROOM + 10)
    shared.db.unavailable = True
    bob = RecordingSession("bob")
    answer = await node.subscribe(bob, room, since=acks[0]["seq"])
    assert answer["code"] == "UNAVAILABLE" and "history unavailable" in answer["message"]


async def test_a_retried_send_is_acknowledged_again_and_produced_once_on_any_node():
    shared = Shared()
    first, second = CoreNode(shared, "node-1"), CoreNode(shared, "node-2")
    room = (await shared.db.create_room("unit", "alice")).id
    alice = RecordingSession("alice")
    await first.subscribe(alice, room)
    ack = await first.send(alice, room, "once", client_msg_id="c1")
    again = await first.send(alice, room, "once", client_msg_id="c1")
    # the retry reaches another node after its fan-out read the original
    second.deliver()
    elsewhere = RecordingSession("alice")
    await second.subscribe(elsewhere, room)
    third = await second.send(elsewhere, room, "once", client_msg_id="c1")
    assert {(a["id"], a["seq"]) for a in (ack, again, third)} == {(ack["id"], ack["seq"])}
    assert sum(len(p) for p in shared.log.partitions) == 1


async def test_a_send_to_a_room_not_entered_is_refused_and_not_produced():
    shared = Shared()
    node = CoreNode(shared)
    room = (await shared.db.create_room("unit", "alice")).id
    alice = RecordingSession("alice")
    answer = await node.send(alice, room, "hello")
    assert answer["type"] == "ERROR" and answer["code"] == "NOT_SUBSCRIBED"
    assert not any(shared.log.partitions)


async def test_blank_text_is_refused_with_bad_text_and_not_produced():
    shared = Shared()
    node = CoreNode(shared)
    room = (await shared.db.create_room("unit", "alice")).id
    alice = RecordingSession("alice")
    await node.subscribe(alice, room)
    answer = await node.send(alice, room, " \n\t")
    assert answer["type"] == "ERROR" and answer["code"] == "BAD_TEXT"
    assert not any(shared.log.partitions)


async def test_a_send_while_kafka_is_down_answers_unavailable_and_a_retry_succeeds():
    shared = Shared()
    node = CoreNode(shared)
    room = (await shared.db.create_room("unit", "alice")).id
    alice = RecordingSession("alice")
    await node.subscribe(alice, room)
    shared.log.unavailable = True
    refused = await node.send(alice, room, "hello", client_msg_id="c1")
    shared.log.unavailable = False
    accepted = await node.send(alice, room, "hello", client_msg_id="c1")
    assert refused["code"] == "UNAVAILABLE" and accepted["type"] == "ACK"
    assert sum(len(p) for p in shared.log.partitions) == 1
