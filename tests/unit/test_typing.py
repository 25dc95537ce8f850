"""TYPING on in-memory storage: one per session and room every 3 s, the rest ignored and counted;
delivered by every node's fan-out to the room's sessions of other users."""

from __future__ import annotations

import trio

from chattrio.signals import TYPING_INTERVAL
from unit.harness import CoreNode, RecordingSession, Shared


async def _typing(node: CoreNode, session: RecordingSession, room_id: int) -> dict | None:
    return await node.frame(session, {"type": "TYPING", "roomId": room_id})


async def test_typing_counts_once_per_3_s_and_reaches_other_users_on_every_node(autojump_clock):
    shared = Shared()
    one, two = CoreNode(shared, "node-1"), CoreNode(shared, "node-2")
    room = await shared.db.create_room("typing", "alice")
    alice, alice_elsewhere, bob = RecordingSession("alice"), RecordingSession("alice"), RecordingSession("bob")
    await one.subscribe(alice, room.id)
    await two.subscribe(alice_elsewhere, room.id)
    await two.subscribe(bob, room.id)
    for _ in range(4):
        assert await _typing(one, alice, room.id) is None  # never answered
    ignored = one.metrics.counter("chattrio_typing_ignored_total", "")
    assert ignored.value() == 3
    assert len(shared.log.typing) == 1
    await trio.sleep(TYPING_INTERVAL)
    await _typing(one, alice, room.id)
    assert len(shared.log.typing) == 2 and ignored.value() == 3
    one.deliver()
    two.deliver()
    assert bob.of_type("TYPING") == [{"type": "TYPING", "roomId": room.id, "userId": "alice"}] * 2
    assert alice.of_type("TYPING") == [] and alice_elsewhere.of_type("TYPING") == []


async def test_typing_in_a_room_not_entered_is_refused():
    node = CoreNode(Shared())
    room = await node.shared.db.create_room("typing", "alice")
    alice = RecordingSession("alice")
    answer = await _typing(node, alice, room.id)
    assert answer is not None and answer["code"] == "NOT_SUBSCRIBED"
    assert node.shared.log.typing == []
