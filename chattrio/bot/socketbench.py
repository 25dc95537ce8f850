"""`python -m chattrio bot --socket-bench`: what the bot's socket paths cost per frame, in CPU.

`--receive-bench` measures parsing and accounting on data already in memory; this one adds what a
real run pays around them: waiting for sockets, system calls, task switches, timers. A forked
"server" process holds the far ends of CONNECTIONS loopback TCP connections and

* writes ROOM_MESSAGE frames one frame per write, round-robin over the connections, at an offered
  rate the bot can keep up with, so that (as in a real fan-out) nearly every read brings one frame;
* then reads and discards what the bot's users send at `SEND_RATE` each.

Only this process's CPU time is reported (time.process_time): the server's work is in the child,
and wall time on a shared machine would measure the neighbours.
"""

from __future__ import annotations

import os
import random
import selectors
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from typing import cast

import msgspec
import trio

from chattrio.bot.config import load_config
from chattrio.bot.runner import WorkerContext, WorkerPlan, message_text, raise_fd_limit
from chattrio.bot.user import SimUser
from chattrio.bot.ws import WsConnection

CONNECTIONS = 1000
RECEIVE_FRAMES = 100_000
RECEIVE_RATE = 10_000  # frames/s offered, below what one process handles, so reads stay one frame each
SEND_RATE = 2.0  # messages/s per user: 2,000 sends/s, twice a rooms worker at 5,000 users
SEND_SECONDS = 10.0
ROOM_ID = 42
RUN_ID = "sbench"
_PACE_EVERY = 50  # frames between two looks at the clock in the server

# Commands from the bot process to the server process, one byte each.
_WRITE_FRAMES = b"w"
_DRAIN = b"d"
_QUIT = b"q"


def _loopback_pairs(n: int) -> tuple[list[socket.socket], list[socket.socket]]:
    """n connected (client, server) TCP pairs on 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as listener:
        address = listener.getsockname()
        clients, servers = [], []
        for _ in range(n):
            clients.append(socket.create_connection(address))
            servers.append(listener.accept()[0])
    for sock in clients:
        sock.setblocking(False)
    return clients, servers


def _room_message_frame(seq: int, cmid: str, text: str) -> bytes:
    payload = msgspec.json.encode(
        {
            "type": "ROOM_MESSAGE",
            "message": {
                "id": "6b1f3c1e-8a3b-4a8e-9b7f-0c2d3e4f5a6b",
                "roomId": ROOM_ID,
                "seq": seq,
                "senderId": "bot0",
                "kind": "chat",
                "text": text,
                "clientMsgId": cmid,
                "sentAt": 0,
            },
        }
    )
    n = len(payload)
    return (bytes((0x81, n)) if n < 126 else bytes((0x81, 126, n >> 8, n & 0xFF))) + payload


class _FakeServer:
    """The forked child: obeys one-byte commands on `control` until told to quit."""

    def __init__(self, socks: list[socket.socket], control: socket.socket, text: str) -> None:
        self.socks = socks
        self.control = control
        self.text = text
        self.rounds = 0  # seqs keep growing across receive phases

    def serve(self) -> None:
        while command := self.control.recv(1):
            if command == _WRITE_FRAMES:
                self._write_frames()
            elif command == _DRAIN:
                self._drain()
            else:
                return

    def _write_frames(self) -> None:
        started = time.monotonic()
        written = 0
        now_us = int(time.time() * 1e6)
        for _ in range(RECEIVE_FRAMES // len(self.socks)):
            seq = 1000 + self.rounds
            self.rounds += 1
            for index, sock in enumerate(self.socks):
                sock.sendall(_room_message_frame(seq, f"{RUN_ID}.{index}.{seq}.{now_us}", self.text))
                written += 1
                if written % _PACE_EVERY == 0:
                    now_us = int(time.time() * 1e6)
                    ahead = started + written / RECEIVE_RATE - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)

    def _drain(self) -> None:
        """Read and drop everything until the next command arrives."""
        with selectors.DefaultSelector() as selector:
            for sock in self.socks:
                selector.register(sock, selectors.EVENT_READ)
            selector.register(self.control, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self.control:
                        return
                    cast(socket.socket, key.fileobj).recv(1 << 16)


def _start_server(servers: list[socket.socket], clients: list[socket.socket], text: str) -> tuple[int, socket.socket]:
    control, child_control = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the server: never returns into the bot's code
        try:
            control.close()
            for sock in clients:
                sock.close()
            _FakeServer(servers, child_control, text).serve()
        finally:
            os._exit(0)
    child_control.close()
    for sock in servers:
        sock.close()
    return pid, control


def _context(rate: float, duration: float) -> WorkerContext:
    cfg = load_config(
        [
            "--node",
            "http://127.0.0.1:1",
            "--users",
            str(CONNECTIONS),
            "--rate",
            str(rate),
            "--ramp-up",
            "0",
            "--duration",
            str(duration),
        ]
    )
    return WorkerContext(WorkerPlan(cfg, RUN_ID, time.time(), [ROOM_ID], list(range(CONNECTIONS))))


def _connections(socks: list[socket.socket]) -> list[WsConnection]:
    return [WsConnection(sock, trio.SocketStream(trio.socket.from_stdlib_socket(sock)), b"") for sock in socks]


class _Phase:
    """CPU seconds spent between start() and stop(): user + system."""

    def start(self) -> None:
        self.started = os.times()

    def stop(self) -> None:
        now = os.times()
        self.user = now.user - self.started.user
        self.system = now.system - self.started.system
        self.cpu = self.user + self.system

    def describe(self) -> str:
        return f"{self.cpu:.2f} CPU s, of which {self.system:.2f} in the kernel"


async def _wait_until(condition: Callable[[], bool]) -> None:
    while not condition():
        await trio.sleep(0.02)


def _users(ctx: WorkerContext) -> list[SimUser]:
    return [SimUser(ctx, i, ROOM_ID, ctx.config.node_endpoints()) for i in range(CONNECTIONS)]


# A task per user for each direction (the simple design) is kept here as the yardstick: on a
# shared machine only a comparison within one run means much.


async def _read_in_own_task(user: SimUser, conn: WsConnection) -> None:
    while True:
        payloads = await conn.receive()
        user.last_received = trio.current_time()
        user.dispatch_all(payloads)


async def _send_in_own_task(user: SimUser, conn: WsConnection) -> None:
    ctx = user.ctx
    interval = 1.0 / SEND_RATE
    next_at = max(ctx.chat_start + random.random() * interval, trio.current_time())
    while next_at < ctx.chat_end:
        await trio.sleep_until(next_at)
        with trio.fail_after(10):
            await conn.send_text(user.new_message())
        next_at = max(next_at + interval, trio.current_time())


async def _receive(control: socket.socket, conns: list[WsConnection], shared_receiver: bool) -> tuple[int, _Phase]:
    ctx = _context(0, 0)
    users = _users(ctx)
    expected = RECEIVE_FRAMES // CONNECTIONS * CONNECTIONS
    phase = _Phase()
    async with trio.open_nursery() as nursery:
        if shared_receiver:
            nursery.start_soon(ctx.receiver.run)
        for user, conn in zip(users, conns):
            nursery.start_soon(user._read if shared_receiver else partial(_read_in_own_task, user), conn)
        await trio.sleep(0.1)  # every reader waiting before the clock starts
        phase.start()
        control.send(_WRITE_FRAMES)
        await _wait_until(lambda: ctx.ledger.counters["delivered"] >= expected)
        phase.stop()
        nursery.cancel_scope.cancel()
    assert ctx.ledger.counters["delivered"] == expected
    assert ctx.receiver.watching == 0
    ctx.receiver.close()
    return expected, phase


async def _send(control: socket.socket, conns: list[WsConnection], send_clock: bool) -> tuple[int, _Phase]:
    ctx = _context(SEND_RATE, SEND_SECONDS)
    users = _users(ctx)
    control.send(_DRAIN)
    phase = _Phase()
    phase.start()
    async with trio.open_nursery() as nursery:
        if send_clock:
            nursery.start_soon(ctx.send_clock.run)
            with ExitStack() as scheduled:
                for user, conn in zip(users, conns):
                    user.conn = conn
                    scheduled.enter_context(ctx.send_clock.schedule(user))
                await trio.sleep_until(ctx.chat_end + 0.1)
            nursery.cancel_scope.cancel()
        else:
            for user, conn in zip(users, conns):
                nursery.start_soon(_send_in_own_task, user, conn)
    phase.stop()
    ctx.receiver.close()
    return len(ctx.ledger.sent), phase


async def _measure(control: socket.socket, socks: list[socket.socket]) -> None:
    conns = _connections(socks)
    for shared_receiver, label in (
        (False, "receive, a task per user (before)"),
        (True, "receive, one receiver per worker"),
    ):
        frames, phase = await _receive(control, conns, shared_receiver)
        print(
            f"{label:36} {frames / phase.cpu:9,.0f} frames per CPU second"
            f" ({frames:,} frames one per read over {CONNECTIONS:,} sockets: {phase.describe()})"
        )
    for send_clock, label in ((False, "send, a task per user (before)"), (True, "send, one send clock per worker")):
        sends, phase = await _send(control, conns, send_clock)
        print(
            f"{label:36} {sends / phase.cpu:9,.0f} sends per CPU second"
            f" ({sends:,} sends by {CONNECTIONS:,} users at {SEND_RATE:g}/s: {phase.describe()})"
        )
    control.send(_QUIT)


def socket_bench() -> int:
    raise_fd_limit()
    clients, servers = _loopback_pairs(CONNECTIONS)
    pid, control = _start_server(servers, clients, message_text(load_config(["--node", "http://x:1"]).message_length))
    try:
        trio.run(_measure, control, clients)
    finally:
        control.close()
        os.waitpid(pid, 0)
    return 0
