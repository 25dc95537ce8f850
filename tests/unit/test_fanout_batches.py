"""The fan-out's MESSAGES frame: a session opened with /ws?batch=1 gets the messages of a room
read in one fan-out cycle in one frame, in order; every other session one ROOM_MESSAGE each."""

from __future__ import annotations

from chattrio.fanout import MESSAGES_PER_FRAME
from unit.harness import CoreNode, RecordingSession, Shared


async def _room_with(node: CoreNode, *sessions: RecordingSession) -> int:
    room = await node.shared.db.create_room("unit", "alice")
    for session in sessions:
        await node.subscribe(session, room.id)
    return room.id


def _batching(user_id: str) -> RecordingSession:
    session = RecordingSession(user_id)
    session.batches = True
    return session


async def test_messages_read_in_one_cycle_reach_a_batching_session_in_one_frame_in_order():
    node = CoreNode(Shared())
    plain, batching = RecordingSession("alice"), _batching("bob")
    room = await _room_with(node, plain, batching)
    acks = [await node.send(plain, room, f"m{i}") for i in range(3)]
    node.deliver()
    batches = batching.of_type("MESSAGES")
    assert batching.of_type("ROOM_MESSAGE") == [] and len(batches) == 1
    assert batches[0]["roomId"] == room
    assert [m["text"] for m in batches[0]["messages"]] == ["m0", "m1", "m2"]
    assert [m["seq"] for m in batches[0]["messages"]] == [ack["seq"] for ack in acks]
    # The same messages, as the other session got them one by one.
    assert batches[0]["messages"] == [f["message"] for f in plain.of_type("ROOM_MESSAGE")]
    assert plain.of_type("MESSAGES") == []


async def test_a_single_message_in_a_cycle_stays_a_room_message():
    node = CoreNode(Shared())
    batching = _batching("bob")
    room = await _room_with(node, batching)
    await node.send(batching, room, "alone")
    node.deliver()
    assert batching.of_type("MESSAGES") == []
    assert batching.texts(room) == ["alone"]


async def test_each_room_gets_its_own_frame():
    node = CoreNode(Shared())
    batching = _batching("bob")
    first, second = await _room_with(node, batching), await _room_with(node, batching)
    for room in (first, second, first, second):
        await node.send(batching, room, f"to {room}")
    node.deliver()
    frames = batching.of_type("MESSAGES")
    assert sorted(f["roomId"] for f in frames) == sorted([first, second])
    for frame in frames:
        assert [m["roomId"] for m in frame["messages"]] == [frame["roomId"]] * 2


async def test_a_long_backlog_is_split_into_frames_of_at_most_the_limit_in_order():
    node = CoreNode(Shared())
    batching = _batching("bob")
    room = await _room_with(node, batching)
    count = MESSAGES_PER_FRAME * 2 + 5
    for i in range(count):
        await node.send(batching, room, f"m{i}")
    node.deliver()
    frames = batching.of_type("MESSAGES")
    assert [len(f["messages"]) for f in frames] == [MESSAGES_PER_FRAME, MESSAGES_PER_FRAME, 5]
    assert [m["text"] for f in frames for m in f["messages"]] == [f"m{i}" for i in range(count)]


async def test_a_resume_replays_room_messages_to_a_batching_session():
    # The room log holds single frames: a replay is unchanged, and live batches follow it.
    node = CoreNode(Shared())
    alice = RecordingSession("alice")
    room = await _room_with(node, alice)
    acks = [await node.send(alice, room, f"m{i}") for i in range(3)]
    node.deliver()
    bob = _batching("bob")
    await node.subscribe(bob, room, since=acks[0]["seq"])
    assert bob.texts(room) == ["m1", "m2"]
    await node.send(alice, room, "live 1")
    await node.send(alice, room, "live 2")
    node.deliver()
    assert [m["text"] for m in bob.of_type("MESSAGES")[0]["messages"]] == ["live 1", "live 2"]
