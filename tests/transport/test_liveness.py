"""Server-side liveness: the sweep's logic on a mock clock, then a real node that pings a quiet
client, closes one that does not answer, and keeps one that does."""

from __future__ import annotations

import json
import struct
import uuid

import httpx
import pytest
import trio
import trio.testing
from client import connect, create_room, login
from rawws import RawClient

from chattrio.transport.liveness import LIVENESS_SLOTS, PING_FRAME, Liveness
from chattrio.transport.sessions import Session

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


async def test_a_ping_interval_of_zero_switches_liveness_off(autojump_clock):
    liveness = Liveness(0, IDLE_TIMEOUT)
    silent = _session(trio.current_time())
    liveness.watch(silent)
    with trio.fail_after(1):
        await liveness.run()  # returns at once instead of sweeping with a tick of zero
    assert silent._pending == [] and not silent.closing


# A real node with short settings ---------------------------------------------------------------


@pytest.fixture
async def lively(make_cluster):
    return await make_cluster(
        1, ping_interval_seconds=PING_INTERVAL, idle_timeout_seconds=IDLE_TIMEOUT, leave_grace_seconds=0.2
    )


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
            lambda f: (
                f["type"] == "ROOM_MESSAGE"
                and f["message"]["kind"] == "leave"
                and f["message"]["senderId"] == silent_user
            )
        )
        assert leave["message"]["roomId"] == room["id"]
    async with httpx.AsyncClient(base_url=lively.nodes[0].internal_url, timeout=10) as http:
        metrics = (await http.get("/metrics")).text
    assert "chattrio_idle_timeout_closes_total 1" in metrics.splitlines()
