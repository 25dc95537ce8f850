"""Session send buffers (bounded, closed when the client is too slow) and the SessionRegistry.

The writer needs a real socket (push() sends directly on its descriptor when nothing is queued),
so these tests use a local socket pair; the peer end plays the client and may stop reading.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from chattrio.frames import PongFrame
from chattrio.tokens import Identity
from chattrio.transport import sessions as sessions_module
from chattrio.transport.sessions import Session, SessionRegistry
from chattrio.transport.websocket import close_frame, text_frame

SMALL_BUFFER = 4096


def _pair() -> tuple[trio.SocketStream, trio.socket.SocketType]:
    """(server stream for the writer, client socket) with small kernel buffers, so a client that
    does not read blocks the server quickly."""
    server, client = trio.socket.socketpair()
    for sock in (server, client):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    return trio.SocketStream(server), client


async def _read_exactly(client, size: int) -> bytes:
    data = b""
    with trio.fail_after(5):
        while len(data) < size:
            chunk = await client.recv(65536)
            assert chunk, "peer closed early"
            data += chunk
    return data


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
        out.append((opcode, data[offset : offset + length]))
        data = data[offset + length :]
    return out


async def _write_until_closed(session: Session, stream: trio.SocketStream) -> None:
    """Write what a closing session has queued; returns once its close frame is written."""
    async with trio.open_nursery() as nursery:
        session.start_writing(stream, nursery)
        await session.finish()  # no reader here: the writer need not wait for a close reply
    assert session.close_sent


async def test_frames_reach_the_client_in_order_then_the_close_frame():
    session = Session("alice", 1 << 20)
    stream, client = _pair()
    frames = [text_frame(f'{{"n":{n}}}'.encode()) for n in range(50)]
    async with trio.open_nursery() as nursery:
        session.push(frames[0])  # queued before the writer runs
        session.start_writing(stream, nursery)
        await trio.testing.wait_all_tasks_blocked()
        for frame in frames[1:]:
            session.push(frame)  # sent directly: nothing queued
        received = await _read_exactly(client, sum(map(len, frames)))
        assert received == b"".join(frames)
        session.close(1000, "bye")
        await session.finish()  # no reader here
        closing = await _read_exactly(client, len(close_frame(1000, "bye")))
    assert closing == close_frame(1000, "bye")
    assert session.closing and session.close_code == 1000
    client.close()


async def test_a_large_burst_keeps_its_order_across_direct_and_queued_sends():
    session = Session("alice", 1 << 22)
    stream, client = _pair()
    frames = [text_frame(bytes([65 + n % 26]) * 3000) for n in range(200)]  # far more than the socket buffers
    expected = b"".join(frames)
    async with trio.open_nursery() as nursery:
        session.start_writing(stream, nursery)
        await trio.testing.wait_all_tasks_blocked()
        for frame in frames:
            session.push(frame)
        assert not session.closing
        received = await _read_exactly(client, len(expected))
        assert received == expected
        session.close(1000, "")
        await session.finish()  # no reader here
    client.close()


async def test_no_writer_task_runs_unless_the_kernel_leaves_a_backlog():
    session = Session("alice", 1 << 22)
    stream, client = _pair()
    small = text_frame(b"hello")
    big = text_frame(b"b" * 200_000)  # far more than the small socket buffers take at once
    async with trio.open_nursery() as nursery:
        session.start_writing(stream, nursery)
        session.push(small)
        assert await _read_exactly(client, len(small)) == small
        assert nursery.child_tasks == set(), "a frame the kernel took needs no task"
        session.push(big)
        assert len(nursery.child_tasks) == 1, "the backlog has a writer"
        assert await _read_exactly(client, len(big)) == big
        await trio.testing.wait_all_tasks_blocked()
        assert nursery.child_tasks == set(), "the writer ends with its backlog"
        session.push(small)  # straight to the socket again
        assert nursery.child_tasks == set()
        assert await _read_exactly(client, len(small)) == small
    client.close()


async def test_send_encodes_a_text_frame():
    session = Session("alice", 1 << 20)
    stream, client = _pair()
    async with trio.open_nursery() as nursery:
        session.start_writing(stream, nursery)
        await trio.testing.wait_all_tasks_blocked()
        session.send(PongFrame("r1"))
        expected = text_frame(b'{"type":"PONG","ref":"r1"}')
        data = await _read_exactly(client, len(expected))
        session.close(1000, "")
        await session.finish()  # no reader here
    assert _frames(data) == [(0x1, b'{"type":"PONG","ref":"r1"}')]
    assert json.loads(_frames(data)[0][1]) == {"type": "PONG", "ref": "r1"}
    client.close()


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
    stream, client = _pair()
    with trio.fail_after(5):
        await _write_until_closed(session, stream)
    data = await _read_exactly(client, len(close_frame(1013, "too slow")))
    assert _frames(data) == [(0x8, struct.pack("!H", 1013) + b"too slow")]
    client.close()


async def test_single_frame_over_the_limit_closes():
    session = Session("alice", 10)
    session.push(b"x" * 11)
    assert session.close_code == 1013


async def test_a_client_that_stops_reading_is_closed_as_too_slow():
    slow = []
    limit = 64 * 1024
    session = Session("alice", limit, on_slow=lambda: slow.append(1))
    stream, client = _pair()
    async with trio.open_nursery() as nursery:
        session.start_writing(stream, nursery)
        await trio.testing.wait_all_tasks_blocked()
        frame = text_frame(b"y" * 1000)
        pushed = 0
        while not session.closing and pushed < 1000:
            session.push(frame)
            pushed += 1
        # the kernel buffers are small: the session overflowed well before 1000 frames
        assert session.close_code == 1013 and slow == [1]
        assert pushed < 1000
        # the client starts reading again: it gets a prefix of the frames, then the close frame
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        data = b""
        with trio.fail_after(10):
            while not data.endswith(close_frame(1013, "too slow")):
                data += await client.recv(65536)
        await session.finish()  # no reader here
    body = data[: -len(close_frame(1013, "too slow"))]
    assert len(body) < pushed * len(frame)  # the backlog was dropped, not delivered
    client.close()


async def test_close_is_idempotent():
    session = Session("alice", 100)
    session.push(b"queued")
    session.close(1012, "service restart: reconnect")
    session.close(1000, "")
    assert session.close_code == 1012
    stream, client = _pair()
    with trio.fail_after(5):
        await _write_until_closed(session, stream)
    expected = b"queued" + close_frame(1012, "service restart: reconnect")  # one close frame only
    assert await _read_exactly(client, len(expected)) == expected
    client.close()


async def _stuck_writer_session(limit: int = 1 << 22):
    """A session whose writer is blocked: the client reads nothing and the buffers are full."""
    session = Session("alice", limit)
    stream, client = _pair()
    session.push(b"z" * (1 << 20))  # queued before the writer starts; far more than the socket takes
    return session, stream, client


async def test_close_bounds_a_stuck_write(autojump_clock):
    session, stream, client = await _stuck_writer_session()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        session.start_writing(stream, nursery)
        await trio.sleep(1)
        session.close(1013, "too slow")
        await session.finish()  # returns when the writer has given up
    # the pending write was given CLOSE_TIMEOUT after the close, not the full WRITE_TIMEOUT
    assert trio.current_time() - start == pytest.approx(1 + sessions_module.CLOSE_TIMEOUT)
    assert session.closing and not session.close_sent
    client.close()


async def test_a_write_that_never_completes_times_out_and_ends_the_reading(autojump_clock):
    session, stream, client = await _stuck_writer_session()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        session.start_writing(stream, nursery)
        assert await session.receive() == b"", "the failed writer shuts the reading"
        assert trio.current_time() - start == pytest.approx(sessions_module.WRITE_TIMEOUT)
        await session.finish()
    assert session.closing
    session.push(b"after")  # a failed session takes nothing more
    assert session._pending == []
    client.close()


async def test_the_writer_ends_the_reading_when_the_close_frame_is_not_answered(autojump_clock):
    session = Session("alice", 1 << 20)
    stream, client = _pair()
    async with trio.open_nursery() as nursery:
        session.start_writing(stream, nursery)
        session.close(1001, "bye")
        closed_at = trio.current_time()
        assert await session.receive() == b""  # the client never answers
        assert trio.current_time() - closed_at == pytest.approx(sessions_module.CLOSE_TIMEOUT)
        await session.finish()
    assert session.close_sent
    assert await _read_exactly(client, len(close_frame(1001, "bye"))) == close_frame(1001, "bye")
    client.close()


@asynccontextmanager
async def _blocked_in_drained(session: Session):
    """A task waiting in `session.drained()`; yields (the list it appends True to once that
    returns, the nursery it runs in)."""
    done: list[bool] = []

    async def wait_drained():
        await session.drained()
        done.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_drained)
        await trio.testing.wait_all_tasks_blocked()
        assert done == []
        yield done, nursery


async def test_drained_waits_until_half_the_buffer_is_free():
    session = Session("alice", 100)
    session.push(b"x" * 50)
    with trio.testing.assert_no_checkpoints():
        await session.drained()  # at half: returns at once
    session.push(b"y")  # 51 of 100 bytes pending
    stream, client = _pair()
    async with _blocked_in_drained(session) as (done, nursery):
        session.start_writing(stream, nursery)
        assert await _read_exactly(client, 51) == b"x" * 50 + b"y"
        with trio.fail_after(5):
            while not done:
                await trio.sleep(0.01)
        session.close(1000, "")
        await session.finish()  # no reader here
    client.close()


async def test_drained_returns_when_the_session_closes():
    session = Session("alice", 100)
    session.push(b"x" * 90)
    stream, client = _pair()
    async with _blocked_in_drained(session) as (done, nursery):
        session.close(1000, "")
        session.start_writing(stream, nursery)
        await session.finish()  # no reader here
    assert done == [True]
    # a close flushes what was queued, then the close frame
    assert await _read_exactly(client, 90 + len(close_frame(1000, ""))) == b"x" * 90 + close_frame(1000, "")
    client.close()


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


async def test_queued_frames_leave_in_one_write_at_flush():
    session = Session("alice", 1 << 20)
    stream, client = _pair()
    frames = [text_frame(f'{{"n":{n}}}'.encode()) for n in range(3)]
    async with trio.open_nursery() as nursery:
        session.start_writing(stream, nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert session.queue(frames[0]) is True  # the first waiting frame: a flush is owed
        assert session.queue(frames[1]) is False
        assert session.queue(frames[2]) is False
        await trio.testing.wait_all_tasks_blocked()  # the writer had every chance to write
        assert select.select([client], [], [], 0)[0] == [], "nothing may be written before the flush"
        session.flush()
        assert await _read_exactly(client, sum(map(len, frames))) == b"".join(frames)
        assert session._pending == []
        nursery.cancel_scope.cancel()
    client.close()


async def test_registry_queues_a_room_and_names_the_sessions_to_flush():
    registry = SessionRegistry()
    a, b = Session("a", 1 << 20), Session("b", 1 << 20)
    for session in (a, b):
        registry.add(session)
        registry.enter(session, 7)
    to_flush: list[Session] = []
    assert registry.queue_to_room(7, b"one", to_flush) == 2
    assert registry.queue_to_room(7, b"two", to_flush) == 2
    assert sorted(s.user_id for s in to_flush) == ["a", "b"]  # each once, though two frames wait
    assert a._pending == [b"one", b"two"] and b._pending == [b"one", b"two"]


# Close order: whatever was queued, then the close frame; never a frame cut in two -----------------


async def _read_until_close_frame(client, close: bytes) -> bytes:
    data = b""
    with trio.fail_after(10):
        while not data.endswith(close):
            chunk = await client.recv(65536)
            assert chunk, "peer closed before the close frame"
            data += chunk
    return data


async def _partly_sent_session(limit: int = 1 << 22):
    """A session whose direct send of one large frame was partly taken by the kernel, with the
    rest pending; yields (session, client, the frame)."""
    session = Session("alice", limit)
    stream, client = _pair()
    big = text_frame(b"b" * 200_000)  # far more than the small socket buffers take at once
    return session, stream, client, big


async def test_close_after_a_partly_sent_frame_keeps_the_frame_whole():
    session, stream, client, big = await _partly_sent_session()
    async with trio.open_nursery() as nursery:
        session.start_writing(stream, nursery)
        await trio.testing.wait_all_tasks_blocked()
        session.push(big)  # a direct send: the kernel takes part of it, the rest is pending
        assert 0 < session._pending_bytes < len(big)
        session.close(1000, "bye")  # before the writer ran
        data = await _read_until_close_frame(client, close_frame(1000, "bye"))
        await session.finish()  # no reader here
    assert _frames(data) == [(0x1, b"b" * 200_000), (0x8, struct.pack("!H", 1000) + b"bye")]
    client.close()


async def test_close_flushes_queued_frames_before_the_close_frame():
    session = Session("alice", 1 << 20)
    stream, client = _pair()
    frames = [text_frame(f'{{"n":{n}}}'.encode()) for n in range(20)]
    for frame in frames:
        session.push(frame)  # the writer has not started: all are queued
    session.close(1012, "service restart: reconnect")
    async with trio.open_nursery() as nursery:
        session.start_writing(stream, nursery)
        data = await _read_until_close_frame(client, close_frame(1012, "service restart: reconnect"))
        await session.finish()  # no reader here
    assert [payload for _, payload in _frames(data)[:-1]] == [f'{{"n":{n}}}'.encode() for n in range(20)]
    assert _frames(data)[-1][0] == 0x8
    client.close()


async def test_too_slow_drops_the_backlog_but_finishes_the_frame_begun():
    session, stream, client, big = await _partly_sent_session(limit=300_000)
    async with trio.open_nursery() as nursery:
        session.start_writing(stream, nursery)
        await trio.testing.wait_all_tasks_blocked()
        session.push(big)
        assert 0 < session._pending_bytes < len(big)
        session.push(text_frame(b"q" * 150_000))  # over the limit: closed as too slow
        assert session.close_code == 1013
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        data = await _read_until_close_frame(client, close_frame(1013, "too slow"))
        await session.finish()  # no reader here
    assert _frames(data) == [(0x1, b"b" * 200_000), (0x8, struct.pack("!H", 1013) + b"too slow")]
    client.close()


# The close handshake on a session served by the listener ---------------------------------------


class _NoChat:
    """The listener's chat service, for sessions that send no frames: nothing to do."""

    def disconnected(self, session):
        pass


def _served_session_parts():
    from chattrio.config import Settings
    from chattrio.metrics import Registry
    from chattrio.transport.listener import HttpServer

    registry = SessionRegistry()
    server = HttpServer(Settings(), None, _NoChat(), registry, Registry())
    stream, client = _pair()
    return server, registry, stream, client


async def _serve_and_close(server, registry, stream, client, answer_close: bool) -> tuple[float, float]:
    """Serve a session, close it from the server; returns (close frame read at, session ended at)."""
    ended: list[float] = []

    async def handshake_answered(stream):
        return Identity("alice", int(time.time()) + 3600), b"", False

    async def serve():
        await server._handle_connection(stream)
        ended.append(trio.current_time())

    server._serve_requests = handshake_answered

    async with trio.open_nursery() as nursery:
        server._connections = nursery
        nursery.start_soon(serve)
        await trio.testing.wait_all_tasks_blocked()
        (session,) = registry.sessions
        session.close(1001, "bye")
        data = b""
        while not data.endswith(close_frame(1001, "bye")):
            data += await client.recv(65536)
        closed_at = trio.current_time()
        await trio.sleep(sessions_module.CLOSE_TIMEOUT / 2)
        if answer_close:
            assert not ended, "the session ended before the client's close frame"
            await client.send(bytes([0x88, 0x82]) + b"\x00\x00\x00\x00" + struct.pack("!H", 1001))
    return closed_at, ended[0]


async def test_the_server_waits_for_the_clients_close_frame(autojump_clock):
    server, registry, stream, client = _served_session_parts()
    closed_at, ended_at = await _serve_and_close(server, registry, stream, client, answer_close=True)
    assert ended_at - closed_at == pytest.approx(sessions_module.CLOSE_TIMEOUT / 2)
    client.close()


async def test_the_server_gives_up_on_a_close_frame_after_the_close_timeout(autojump_clock):
    server, registry, stream, client = _served_session_parts()
    closed_at, ended_at = await _serve_and_close(server, registry, stream, client, answer_close=False)
    assert ended_at - closed_at == pytest.approx(sessions_module.CLOSE_TIMEOUT)
    client.close()
