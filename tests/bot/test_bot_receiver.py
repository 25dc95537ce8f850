"""The worker's shared receiver over real sockets: plain text messages are dispatched without the
owner's task, everything else hands the connection back to it."""

import socket
import struct

import pytest
import trio
import trio.testing

from chattrio.bot.receiver import Receiver
from chattrio.bot.ws import OP_CLOSE, OP_PONG, WsConnection, WsError, mask_payload


def server_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    assert len(payload) < 126
    return bytes((0x80 | opcode, len(payload))) + payload


def read_client_frames(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """(opcode, unmasked payload) of the next `count` client frames (small ones) on a blocking socket."""
    out: list[tuple[int, bytes]] = []
    buf = b""
    while len(out) < count:
        while len(buf) < 6 or len(buf) < 6 + (buf[1] & 0x7F):
            buf += sock.recv(65536)
        n = buf[1] & 0x7F
        assert buf[1] & 0x80 and n < 126
        out.append((buf[0] & 0x0F, mask_payload(buf[6 : 6 + n], buf[2:6])))
        buf = buf[6 + n :]
    return out


class FakeReader:
    def __init__(self, fail_on: bytes | None = None) -> None:
        self.last_received = 0.0
        self.batches: list[list[bytes]] = []
        self.fail_on = fail_on

    def dispatch_all(self, payloads: list[bytes]) -> None:
        self.batches.append(payloads)
        if self.fail_on in payloads:
            raise WsError("subscription refused")


class Owner:
    """A user's task, reduced to watching until the receiver hands the connection back."""

    def __init__(self, receiver: Receiver, conn: WsConnection, reader: FakeReader) -> None:
        self.receiver, self.conn, self.reader = receiver, conn, reader
        self.handed_back = trio.Event()

    async def watch(self) -> None:
        await self.receiver.watch(self.conn, self.reader)
        self.handed_back.set()


def connection() -> tuple[WsConnection, socket.socket]:
    ours, server = socket.socketpair()
    ours.setblocking(False)
    return WsConnection(ours, trio.SocketStream(trio.socket.from_stdlib_socket(ours)), b""), server


async def eventually(condition) -> None:
    with trio.fail_after(5):
        while not condition():
            await trio.sleep(0.001)


async def watched(receiver: Receiver, nursery, conn: WsConnection, reader: FakeReader) -> Owner:
    """An owner task watching `conn` through the receiver, once the receiver has registered it."""
    owner = Owner(receiver, conn, reader)
    nursery.start_soon(owner.watch)
    await eventually(lambda: receiver.watching == 1)
    return owner


@pytest.fixture
async def receiver(nursery):
    receiver = Receiver()
    nursery.start_soon(receiver.run)
    yield receiver


async def test_text_messages_are_dispatched_without_the_owner(receiver, nursery):
    conn, server = connection()
    reader = FakeReader()
    owner = await watched(receiver, nursery, conn, reader)
    for text in (b"one", b"two", b"three"):
        server.send(server_frame(text))
        await eventually(lambda text=text: reader.batches and reader.batches[-1] == [text])
    server.send(server_frame(b"four") + server_frame(b"five")[:4])  # a frame and a half
    await eventually(lambda: reader.batches[-1] == [b"four"])
    server.send(server_frame(b"five")[4:])
    await eventually(lambda: sum(map(len, reader.batches)) == 5)
    assert [p for batch in reader.batches for p in batch] == [b"one", b"two", b"three", b"four", b"five"]
    assert reader.last_received > 0
    assert not owner.handed_back.is_set() and receiver.watching == 1


async def test_a_ping_is_handed_back_to_be_answered_and_watching_resumes(receiver, nursery):
    conn, server = connection()
    reader = FakeReader()
    owner = await watched(receiver, nursery, conn, reader)
    server.send(server_frame(b"before") + server_frame(b"hello?", opcode=0x9))
    await owner.handed_back.wait()
    assert reader.batches == [[b"before"]] and receiver.watching == 0
    assert await conn.receive() == []  # answers the ping, reads nothing more
    assert read_client_frames(server, 1) == [(OP_PONG, b"hello?")]
    owner = Owner(receiver, conn, reader)
    nursery.start_soon(owner.watch)
    server.send(server_frame(b"after"))
    await eventually(lambda: reader.batches[-1] == [b"after"])
    assert not owner.handed_back.is_set()


async def test_a_close_frame_is_handed_back_after_the_messages_before_it(receiver, nursery):
    conn, server = connection()
    reader = FakeReader()
    owner = await watched(receiver, nursery, conn, reader)
    server.send(server_frame(b"last") + server_frame(struct.pack(">H", 1012) + b"restart", opcode=0x8))
    await owner.handed_back.wait()
    assert reader.batches == [[b"last"]] and receiver.watching == 0
    with pytest.raises(WsError, match="1012"):
        await conn.receive()
    assert read_client_frames(server, 1) == [(OP_CLOSE, struct.pack(">H", 1012))]  # echoed


@pytest.mark.parametrize("fault", ["eof", "masked frame", "refused subscription"])
async def test_a_broken_connection_is_handed_back_and_receive_raises(receiver, nursery, fault):
    conn, server = connection()
    owner = await watched(receiver, nursery, conn, FakeReader(fail_on=b"refused"))
    if fault == "eof":
        server.close()
    elif fault == "masked frame":
        server.send(bytes((0x81, 0x81)) + b"\0\0\0\0x")
    else:
        server.send(server_frame(b"refused"))
    await owner.handed_back.wait()
    assert receiver.watching == 0
    with pytest.raises(WsError):
        await conn.receive()


async def test_closing_a_watched_connection_unregisters_it_and_wakes_the_owner(receiver, nursery):
    conn, _server = connection()
    owner = await watched(receiver, nursery, conn, FakeReader())
    await conn.aclose_now()  # as the keepalive does with a silent connection
    await owner.handed_back.wait()
    assert receiver.watching == 0
    with pytest.raises(trio.ClosedResourceError):
        await conn.receive()
    # The descriptor number is free again (and usually reused at once): no stale registration.
    again, server2 = connection()
    reader = FakeReader()
    await watched(receiver, nursery, again, reader)
    server2.send(server_frame(b"new"))
    await eventually(lambda: reader.batches == [[b"new"]])


async def test_cancelling_the_owner_unregisters(receiver):
    conn, _server = connection()
    with trio.move_on_after(0.05):
        await receiver.watch(conn, FakeReader())
    assert receiver.watching == 0


async def test_pending_work_returns_at_once_without_registering(receiver):
    ours, server = socket.socketpair()
    ours.setblocking(False)
    conn = WsConnection(ours, trio.SocketStream(trio.socket.from_stdlib_socket(ours)), server_frame(b"leftover"))
    with trio.testing.assert_no_checkpoints():
        await receiver.watch(conn, FakeReader())
    assert receiver.watching == 0
    assert await conn.receive() == [b"leftover"]
