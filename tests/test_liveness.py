"""Server-side liveness: the sweep's logic on a mock clock, then a real node that pings a quiet
client, closes one that does not answer, and keeps one that does."""

from __future__ import annotations

import base64
import json
import os
import struct
import uuid

import pytest
import trio
import trio.testing

from chattrio.bot.ws import encode_client_frame
from chattrio.liveness import LIVENESS_SLOTS, PING_FRAME, Liveness
from chattrio.sessions import Session
from client import connect, create_room, login

PING_INTERVAL = 0.5
IDLE_TIMEOUT = 1.5


def _session(last_received: float = 0.0) -> Session:
    session = Session("alice", 1 << 20)
    session.last_received = last_received
    return session


def _sweep_all(liveness: Liveness, now: float) -> None:
    for _ in range(LIVENESS_SLOTS):
        liveness.sweep(now)


# The sweep's logic --------------------------------------------------------------------------


def test_a_quiet_session_is_pinged_and_a_busy_one_is_not():
    liveness = Liveness(PING_INTERVAL, IDLE_TIMEOUT)
    quiet, busy = _session(0.0), _session(0.9)
    for session in (quiet, busy):
        liveness.watch(session)
    _sweep_all(liveness, 1.0)
    assert quiet._pending == [PING_FRAME] and not quiet.closing
    assert busy._pending == []


def test_a_silent_session_is_closed_with_1001_and_counted():
    timeouts = []
    liveness = Liveness(PING_INTERVAL, IDLE_TIMEOUT, on_timeout=lambda: timeouts.append(1))
    silent = _session(0.0)
    liveness.watch(silent)
    _sweep_all(liveness, IDLE_TIMEOUT)
    assert silent.closing and silent.close_code == 1001
    assert timeouts == [1]
    _sweep_all(liveness, IDLE_TIMEOUT * 2)  # a closing session is not closed or counted twice
    assert timeouts == [1]


def test_a_forgotten_session_is_left_alone():
    liveness = Liveness(PING_INTERVAL, IDLE_TIMEOUT)
    session = _session(0.0)
    liveness.watch(session)
    liveness.forget(session)
    liveness.forget(session)  # twice is harmless
    _sweep_all(liveness, 100.0)
    assert session._pending == [] and not session.closing


def test_each_sweep_visits_one_slice():
    liveness = Liveness(PING_INTERVAL, IDLE_TIMEOUT)
    sessions = [_session(0.0) for _ in range(LIVENESS_SLOTS * 20)]
    for session in sessions:
        liveness.watch(session)
    liveness.sweep(1.0)
    pinged = sum(1 for s in sessions if s._pending)
    assert 0 < pinged < len(sessions) // 2
    for _ in range(LIVENESS_SLOTS - 1):
        liveness.sweep(1.0)
    assert all(s._pending == [PING_FRAME] for s in sessions)  # each once per round


async def test_run_pings_within_an_interval_and_closes_within_timeout_plus_an_interval(autojump_clock):
    liveness = Liveness(PING_INTERVAL, IDLE_TIMEOUT)
    start = trio.current_time()
    silent = _session(start)
    liveness.watch(silent)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(liveness.run)
        while not silent._pending:
            await trio.sleep(0.01)
        pinged_at = trio.current_time() - start
        while not silent.closing:
            await trio.sleep(0.01)
        closed_at = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert PING_INTERVAL <= pinged_at <= 2 * PING_INTERVAL + 0.05
    assert IDLE_TIMEOUT <= closed_at <= IDLE_TIMEOUT + PING_INTERVAL + 0.05
    assert silent.close_code == 1001


# A real node with short settings ---------------------------------------------------------------


class RawClient:
    """A WebSocket client on a bare TCP stream, so a test decides whether pings are answered."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buf = b""

    @classmethod
    async def connect(cls, base_url: str, token: str) -> RawClient:
        host, port = base_url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        )
        client = cls(stream)
        while b"\r\n\r\n" not in client._buf:
            client._buf += await client._receive()
        head, _, client._buf = client._buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return client

    async def _receive(self) -> bytes:
        with trio.fail_after(15):
            data = await self.stream.receive_some(65536)
        assert data, "the server closed the connection"
        return data

    async def next_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame."""
        while True:
            if len(self._buf) >= 2:
                length, offset = self._buf[1] & 0x7F, 2
                if length == 126 and len(self._buf) >= 4:
                    (length,), offset = struct.unpack("!H", self._buf[2:4]), 4
                elif length == 127 and len(self._buf) >= 10:
                    (length,), offset = struct.unpack("!Q", self._buf[2:10]), 10
                if length < 126 or offset > 2:
                    if len(self._buf) >= offset + length:
                        opcode, payload = self._buf[0] & 0x0F, self._buf[offset:offset + length]
                        self._buf = self._buf[offset + length:]
                        return opcode, payload
            self._buf += await self._receive()

    async def send(self, opcode: int, payload: bytes) -> None:
        await self.stream.send_all(encode_client_frame(opcode, payload))

    async def send_json(self, **frame) -> None:
        await self.send(0x1, json.dumps(frame).encode())

    async def at_end(self) -> bool:
        """True when the server has closed the TCP connection (after any bytes still to read)."""
        with trio.fail_after(15):
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    return True


@pytest.fixture
def lively(make_cluster):
    return make_cluster(1, ping_interval_seconds=PING_INTERVAL, idle_timeout_seconds=IDLE_TIMEOUT,
                        leave_grace_seconds=0.2)


async def test_a_client_that_answers_pings_stays_connected(lively):
    url = lively.urls[0]
    client = await RawClient.connect(url, await login(url, f"live{uuid.uuid4().hex[:8]}"))
    pings = 0
    while pings < 5:  # five pings span more than the idle timeout
        opcode, payload = await client.next_frame()
        assert opcode != 0x8, f"closed: {payload!r}"
        if opcode == 0x9:
            pings += 1
            await client.send(0xA, payload)
    await client.send_json(type="PING", ref="still-here")
    while (frame := await client.next_frame())[0] != 0x1 or b"still-here" not in frame[1]:
        assert frame[0] != 0x8
    assert json.loads(frame[1]) == {"type": "PONG", "ref": "still-here"}
    await client.stream.aclose()


async def test_a_client_that_does_not_answer_is_closed_and_leaves_the_room(lively):
    url = lively.urls[0]
    owner = f"own{uuid.uuid4().hex[:8]}"
    room = await create_room(url, await login(url, owner), f"liveness-{uuid.uuid4().hex[:6]}")
    silent_user = f"mute{uuid.uuid4().hex[:8]}"
    async with connect(url, owner) as watcher:  # trio-websocket answers pings
        assert (await watcher.subscribe(room["id"]))["type"] == "SUBSCRIBED"
        silent = await RawClient.connect(url, await login(url, silent_user))
        await silent.send_json(type="SUBSCRIBE", destination=f"/topic/message/{room['id']}", ref="s")
        frames = []
        while (frame := await silent.next_frame())[0] != 0x8:  # never answers a ping
            frames.append(frame)
        assert any(opcode == 0x9 for opcode, _ in frames), "pinged before being closed"
        code, reason = struct.unpack("!H", frame[1][:2])[0], frame[1][2:].decode()
        assert (code, reason) == (1001, "no answer to ping")
        await silent.send(0x8, struct.pack("!H", 1000))  # the close handshake completes
        assert await silent.at_end()
        leave = await watcher.wait_for(
            lambda f: f["type"] == "ROOM_MESSAGE" and f["message"]["kind"] == "leave"
            and f["message"]["senderId"] == silent_user)
        assert leave["message"]["roomId"] == room["id"]
