"""Session send buffers (bounded, closed when the client is too slow) and the SessionRegistry."""

from __future__ import annotations

import json
import struct

import pytest
import trio
import trio.testing

from chattrio import sessions as sessions_module
from chattrio.frames import PongFrame
from chattrio.sessions import Session, SessionRegistry
from chattrio.websocket import close_frame, text_frame


class RecordingStream(trio.abc.SendStream):
    """Records every send_all call; `block` makes writes hang like a client that stopped reading."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.block = False

    async def send_all(self, data) -> None:
        if self.block:
            await trio.sleep_forever()
        self.writes.append(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked frame in data."""
    out = []
    while data:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if length == 126:
            (length,), offset = struct.unpack("!H", data[2:4]), 4
        elif length == 127:
            (length,), offset = struct.unpack("!Q", data[2:10]), 10
        out.append((opcode, data[offset:offset + length]))
        data = data[offset + length:]
    return out


async def test_pending_frames_are_merged_into_one_write():
    session = Session("alice", 1 << 20)
    stream = RecordingStream()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run_writer, stream)
        session.push(b"one")
        session.push(b"two")
        session.push(b"three")
        await trio.testing.wait_all_tasks_blocked()
        assert stream.writes == [b"onetwothree"]
        session.push(b"four")
        await trio.testing.wait_all_tasks_blocked()
        assert stream.writes == [b"onetwothree", b"four"]
        session.close(1000, "bye")
    # the writer returns after writing the close frame
    assert stream.writes[-1] == close_frame(1000, "bye")
    assert session.closing and session.close_code == 1000


async def test_send_encodes_a_text_frame():
    session = Session("alice", 1 << 20)
    stream = RecordingStream()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run_writer, stream)
        session.send(PongFrame("r1"))
        await trio.testing.wait_all_tasks_blocked()
        session.close(1000, "")
    assert _frames(stream.writes[0]) == [(0x1, b'{"type":"PONG","ref":"r1"}')]
    assert json.loads(_frames(stream.writes[0])[0][1]) == {"type": "PONG", "ref": "r1"}


def test_new_sessions_have_unique_ids_and_no_rooms():
    a, b = Session("alice", 100), Session("alice", 100)
    assert a.id != b.id and len(a.id) == 32
    assert a.rooms == set() and not a.wants_room_events and not a.closing and a.close_code is None


async def test_buffer_up_to_the_limit_is_kept():
    slow = []
    session = Session("alice", 10, on_slow=lambda: slow.append(1))
    session.push(b"12345")
    session.push(b"67890")  # exactly the limit
    assert not session.closing and slow == []


async def test_overflow_closes_the_session_as_too_slow_and_drops_the_backlog():
    slow = []
    session = Session("alice", 10, on_slow=lambda: slow.append(1))
    session.push(b"12345")
    session.push(b"678901")  # 11 bytes: over the limit
    assert session.closing and session.close_code == 1013
    assert slow == [1]
    session.push(b"more")  # ignored once closing
    session.push(b"x" * 100)
    assert slow == [1]
    stream = RecordingStream()
    await session.run_writer(stream)  # returns once the close frame is written
    assert stream.writes == [close_frame(1013, "too slow")]
    assert _frames(stream.writes[0]) == [(0x8, struct.pack("!H", 1013) + b"too slow")]


async def test_single_frame_over_the_limit_closes():
    session = Session("alice", 10)
    session.push(b"x" * 11)
    assert session.close_code == 1013


async def test_close_is_idempotent():
    session = Session("alice", 100)
    session.push(b"queued")
    session.close(1012, "service restart: reconnect")
    session.close(1000, "")
    assert session.close_code == 1012
    stream = RecordingStream()
    await session.run_writer(stream)
    assert stream.writes == [close_frame(1012, "service restart: reconnect")]


async def test_close_bounds_a_stuck_write(autojump_clock):
    session = Session("alice", 100)
    stream = RecordingStream()
    stream.block = True
    session.push(b"hello")
    start = trio.current_time()
    timed_out = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run_writer, stream)
            await trio.sleep(1)
            session.close(1013, "too slow")
    except* trio.TooSlowError:
        timed_out.append(trio.current_time())
    assert timed_out, "the stuck write must time out"
    # the pending write was given CLOSE_TIMEOUT after the close, not the full WRITE_TIMEOUT
    elapsed = trio.current_time() - start
    assert elapsed == pytest.approx(1 + sessions_module.CLOSE_TIMEOUT)


async def test_a_write_that_never_completes_times_out(autojump_clock):
    session = Session("alice", 100)
    stream = RecordingStream()
    stream.block = True
    session.push(b"hello")
    start = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await session.run_writer(stream)
    assert trio.current_time() - start == pytest.approx(sessions_module.WRITE_TIMEOUT)


async def test_drained_waits_until_half_the_buffer_is_free():
    session = Session("alice", 100)
    session.push(b"x" * 50)
    with trio.fail_after(1):
        await session.drained()  # at half: returns at once
    session.push(b"y")
    stream = RecordingStream()
    done = []

    async def wait_drained():
        await session.drained()
        done.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_drained)
        await trio.testing.wait_all_tasks_blocked()
        assert done == []  # 51 of 100 bytes pending
        nursery.start_soon(session.run_writer, stream)
        await trio.testing.wait_all_tasks_blocked()
        assert len(done) == 1
        assert stream.writes == [b"x" * 50 + b"y"]
        session.close(1000, "")


async def test_drained_returns_when_the_session_closes():
    session = Session("alice", 100)
    session.push(b"x" * 90)
    stream = RecordingStream()
    done = []

    async def wait_drained():
        await session.drained()
        done.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_drained)
        await trio.testing.wait_all_tasks_blocked()
        assert done == []
        session.close(1000, "")  # the backlog is dropped
        nursery.start_soon(session.run_writer, stream)
    assert done == [True]
    assert stream.writes == [close_frame(1000, "")]  # the 90 queued bytes were never written


# SessionRegistry ---------------------------------------------------------------------------------


async def test_room_delivery_reaches_members_only():
    registry = SessionRegistry()
    a, b, c = Session("a", 1000), Session("b", 1000), Session("c", 1000)
    for s in (a, b, c):
        registry.add(s)
    registry.enter(a, 1)
    registry.enter(b, 1)
    registry.enter(c, 2)
    assert a.rooms == {1} and c.rooms == {2}
    assert registry.deliver_to_room(1, b"m1") == 2
    assert registry.deliver_to_room(2, b"m2") == 1
    assert registry.deliver_to_room(3, b"m3") == 0
    assert a._pending == [b"m1"] and b._pending == [b"m1"] and c._pending == [b"m2"]
    assert registry.sessions_per_room() == {("1",): 2, ("2",): 1}
    assert sorted(registry.memberships()) == sorted([(1, "a", a.id), (1, "b", b.id), (2, "c", c.id)])


async def test_entering_twice_delivers_once():
    registry = SessionRegistry()
    a = Session("a", 1000)
    registry.add(a)
    registry.enter(a, 1)
    registry.enter(a, 1)
    assert registry.deliver_to_room(1, b"m") == 1
    assert a._pending == [b"m"]


async def test_leave_stops_delivery_and_forgets_empty_rooms():
    registry = SessionRegistry()
    a, b = Session("a", 1000), Session("b", 1000)
    registry.enter(a, 1)
    registry.enter(b, 1)
    registry.leave(a, 1)
    assert a.rooms == set()
    assert registry.deliver_to_room(1, b"m") == 1 and a._pending == []
    registry.leave(b, 1)
    assert registry.sessions_per_room() == {}
    registry.leave(b, 1)  # leaving a room not entered is harmless
    registry.leave(b, 99)
    assert registry.deliver_to_room(1, b"m") == 0


async def test_remove_returns_the_rooms_and_stops_everything():
    registry = SessionRegistry()
    a, b = Session("a", 1000), Session("b", 1000)
    for s in (a, b):
        registry.add(s)
        registry.watch_rooms(s, True)
    registry.enter(a, 1)
    registry.enter(a, 2)
    registry.enter(b, 2)
    assert sorted(registry.remove(a)) == [1, 2]
    assert registry.sessions == {b}
    assert registry.deliver_to_room(1, b"m") == 0
    assert registry.deliver_to_room(2, b"m") == 1
    assert registry.deliver_to_room_watchers(b"created") == 1
    assert a._pending == []
    assert registry.sessions_per_room() == {("2",): 1}
    assert registry.remove(a) == []  # removing twice is harmless


async def test_room_watchers():
    registry = SessionRegistry()
    a, b = Session("a", 1000), Session("b", 1000)
    registry.watch_rooms(a, True)
    registry.watch_rooms(a, True)
    assert a.wants_room_events
    assert registry.deliver_to_room_watchers(b"created") == 1
    assert a._pending == [b"created"] and b._pending == []
    registry.watch_rooms(a, False)
    registry.watch_rooms(b, False)  # never watched: harmless
    assert not a.wants_room_events
    assert registry.deliver_to_room_watchers(b"again") == 0


async def test_a_slow_member_is_closed_without_affecting_the_others():
    registry = SessionRegistry()
    slow_calls = []
    fast, slow = Session("fast", 1000), Session("slow", 10, on_slow=lambda: slow_calls.append(1))
    registry.enter(fast, 1)
    registry.enter(slow, 1)
    frame = text_frame(b"x" * 20)
    assert registry.deliver_to_room(1, frame) == 2
    assert slow.close_code == 1013 and slow_calls == [1]
    assert not fast.closing and fast._pending == [frame]
    assert registry.deliver_to_room(1, frame) == 2  # the slow session stays until its connection ends
    assert fast._pending == [frame, frame]
    assert slow_calls == [1]
