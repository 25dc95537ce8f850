"""A connection's SENDs in flight together: handed to Kafka in frame order, answered as each
delivery settles, joined when retried, bounded per session."""

from __future__ import annotations

import trio
import trio.testing

from chattrio import chat
from chattrio.storage import kafka
from unit.harness import CoreNode, RecordingSession, Shared


async def _entered_room(shared: Shared) -> tuple[CoreNode, RecordingSession, int]:
    node = CoreNode(shared)
    room = (await shared.db.create_room("unit", "alice")).id
    alice = RecordingSession("alice")
    await node.subscribe(alice, room)
    return node, alice, room


def _send(room: int, text: str, ref: str, client_msg_id: str | None = None) -> dict:
    raw: dict[str, object] = {"type": "SEND", "roomId": room, "text": text, "ref": ref}
    if client_msg_id is not None:
        raw["clientMsgId"] = client_msg_id
    return raw


def _answer(session: RecordingSession, ref: str) -> dict:
    (answer,) = [frame for frame in session.received if frame.get("ref") == ref]
    return answer


async def test_sends_are_handed_over_in_order_before_any_is_answered_then_acked_in_order():
    shared = Shared()
    node, alice, room = await _entered_room(shared)
    shared.log.hold = True
    for n in range(3):
        await node.read(alice, _send(room, f"m{n}", f"s{n}", f"c{n}"))
    assert [record.text for record, _ in shared.log.held] == ["m0", "m1", "m2"]
    assert not alice.of_type("ACK") and not alice.of_type("ERROR")
    shared.log.release()
    acks = [_answer(alice, f"s{n}") for n in range(3)]
    assert [ack["type"] for ack in acks] == ["ACK"] * 3
    assert acks[0]["seq"] < acks[1]["seq"] < acks[2]["seq"]


async def test_a_send_that_times_out_does_not_hold_back_the_answer_of_the_next(autojump_clock):
    shared = Shared()
    node, alice, room = await _entered_room(shared)
    shared.log.hold = True
    await node.read(alice, _send(room, "lost", "first", "c-lost"))
    await node.read(alice, _send(room, "next", "second", "c-next"))
    shared.log.release([1])  # the second is acknowledged; the first never is
    assert _answer(alice, "second")["type"] == "ACK"
    shared.log.fail_overdue()
    assert not [frame for frame in alice.received if frame.get("ref") == "first"]
    await trio.sleep(kafka.REPORT_DEADLINE)
    shared.log.fail_overdue()
    failed = _answer(alice, "first")
    assert failed["type"] == "ERROR" and failed["code"] == "UNAVAILABLE"
    answers = [frame["ref"] for frame in alice.received if frame.get("ref") in ("first", "second")]
    assert answers == ["second", "first"]


async def test_a_retry_while_the_first_is_in_flight_is_produced_once_and_gets_the_same_ack():
    shared = Shared()
    node, alice, room = await _entered_room(shared)
    shared.log.hold = True
    await node.read(alice, _send(room, "once", "try-1", "c1"))
    await node.read(alice, _send(room, "once", "try-2", "c1"))
    assert len(shared.log.held) == 1
    shared.log.release()
    first, second = _answer(alice, "try-1"), _answer(alice, "try-2")
    assert first["type"] == second["type"] == "ACK"
    assert (first["id"], first["seq"]) == (second["id"], second["seq"])
    assert sum(len(p) for p in shared.log.partitions) == 1


async def test_a_retry_joined_to_a_failed_delivery_fails_too_and_a_later_retry_produces_again():
    shared = Shared()
    node, alice, room = await _entered_room(shared)
    shared.log.hold = True
    await node.read(alice, _send(room, "once", "try-1", "c1"))
    await node.read(alice, _send(room, "once", "try-2", "c1"))
    shared.log.fail("broker went away")
    assert _answer(alice, "try-1")["code"] == _answer(alice, "try-2")["code"] == "UNAVAILABLE"
    shared.log.hold = False
    assert (await node.send(alice, room, "once", client_msg_id="c1"))["type"] == "ACK"
    assert sum(len(p) for p in shared.log.partitions) == 1


async def test_a_send_whose_session_closed_is_still_settled_and_its_retry_gets_the_same_ack():
    shared = Shared()
    node, alice, room = await _entered_room(shared)
    shared.log.hold = True
    await node.read(alice, _send(room, "bye", "s1", "c1"))
    node.chat.disconnected(alice)  # the connection dropped before the broker answered
    shared.log.release()
    again = RecordingSession("alice")
    await node.subscribe(again, room)
    retried = await node.send(again, room, "bye", client_msg_id="c1")
    assert retried["type"] == "ACK" and retried["seq"] == _answer(alice, "s1")["seq"]
    assert sum(len(p) for p in shared.log.partitions) == 1


async def test_the_reader_waits_at_max_sends_in_flight_until_one_settles():
    shared = Shared()
    node, alice, room = await _entered_room(shared)
    shared.log.hold = True
    limit = chat.MAX_SENDS_IN_FLIGHT
    read_all = trio.Event()

    async def reader() -> None:
        for n in range(limit + 1):
            await node.read(alice, _send(room, f"m{n}", f"s{n}"))
        read_all.set()

    async with trio.open_nursery() as tasks:
        tasks.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert len(shared.log.held) == limit and not read_all.is_set()
        shared.log.release([0])
        await read_all.wait()
        assert [record.text for record, _ in shared.log.held] == [f"m{n}" for n in range(1, limit + 1)]
        shared.log.release()
    assert len(alice.of_type("ACK")) == limit + 1 and not alice.of_type("ERROR")
