"""The bot's minimal WebSocket client: frame parser, masking, upgrade handshake, writes."""

import socket
import struct

import pytest
import trio
import trio.testing

from chattrio.bot.ws import (
    OP_PONG,
    OP_TEXT,
    FrameParser,
    HandshakeRefused,
    WsConnection,
    WsError,
    _open_tcp,
    accept_key,
    build_upgrade_request,
    encode_client_frame,
    mask_payload,
    parse_upgrade_response,
)


def server_frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        return bytes((b0, n)) + payload
    if n < 65536:
        return struct.pack(">BBH", b0, 126, n) + payload
    return struct.pack(">BBQ", b0, 127, n) + payload


def test_frames_of_every_length_class_split_at_every_byte():
    payloads = [b"", b"a" * 125, b"b" * 126, b"c" * 65535, b"d" * 70000]
    stream = b"".join(server_frame(p) for p in payloads)
    for step in (1, 7, 4096, len(stream)):
        parser = FrameParser()
        out = []
        for i in range(0, len(stream), step):
            out.extend(parser.feed(stream[i : i + step]))
        assert out == payloads


def test_fragmented_message_with_a_ping_in_the_middle():
    parser = FrameParser()
    data = (
        server_frame(b"hel", fin=False)
        + server_frame(b"ping!", opcode=0x9)
        + server_frame(b"lo ", opcode=0x0, fin=False)
        + server_frame(b"world", opcode=0x0)
    )
    assert parser.feed(data) == [b"hello world"]
    assert parser.pings == [b"ping!"]


def test_close_frame_stops_parsing():
    parser = FrameParser()
    data = (
        server_frame(b"x") + server_frame(struct.pack(">H", 1012) + b"service restart", opcode=0x8) + server_frame(b"y")
    )
    assert parser.feed(data) == [b"x"]
    assert parser.closed is not None and parser.closed.code == 1012 and parser.closed.reason == "service restart"


@pytest.mark.parametrize(
    "bad",
    [
        bytes((0x81, 0x81)) + b"\0\0\0\0x",  # masked server frame
        server_frame(b"x", opcode=0x2),  # binary
        server_frame(b"x", opcode=0x0),  # continuation without a start
        bytes((0xC1, 1)) + b"x",  # RSV1 without an extension
    ],
)
def test_protocol_errors(bad):
    with pytest.raises(WsError):
        FrameParser().feed(bad)


def test_client_frames_are_masked_and_unmask_back():
    payload = "héllo wörld".encode() * 50
    mask = b"\x01\x02\x03\x04"
    frame = encode_client_frame(OP_TEXT, payload, mask)
    assert frame[0] == 0x81 and frame[1] & 0x80
    (n,) = struct.unpack_from(">H", frame, 2)
    assert n == len(payload) and frame[4:8] == mask
    assert mask_payload(frame[8:], mask) == payload
    assert mask_payload(b"", mask) == b""


def test_upgrade_request_carries_the_token_in_a_header_not_the_url():
    request, _ = build_upgrade_request("127.0.0.1", 8080, "/ws", "tok.en")
    head = request.decode("latin-1").split("\r\n")
    assert head[0] == "GET /ws HTTP/1.1"
    assert "Authorization: Bearer tok.en" in head
    assert "Authorization" not in build_upgrade_request("127.0.0.1", 8080, "/ws")[0].decode("latin-1")


def test_upgrade_response():
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    assert accept_key(key) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # the RFC 6455 example
    ok = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}"
    ).encode()
    parse_upgrade_response(ok, key)
    with pytest.raises(HandshakeRefused) as refused:
        parse_upgrade_response(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0", key)
    assert refused.value.status == 401
    with pytest.raises(WsError):
        parse_upgrade_response(ok.replace(b"s3pP", b"AAAA"), key)


def _connection():
    ours, server = socket.socketpair()
    ours.setblocking(False)
    return WsConnection(ours, trio.SocketStream(trio.socket.from_stdlib_socket(ours)), b""), server


def _client_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, unmasked payload) of every client frame in `data`."""
    out = []
    pos = 0
    while pos < len(data):
        b0, n = data[pos], data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            (n,) = struct.unpack_from(">H", data, pos)
            pos += 2
        elif n == 127:
            (n,) = struct.unpack_from(">Q", data, pos)
            pos += 8
        mask = data[pos : pos + 4]
        out.append((b0 & 0x0F, mask_payload(data[pos + 4 : pos + 4 + n], mask)))
        pos += 4 + n
    return out


async def _read_all(sock: socket.socket) -> bytes:
    received = b""
    while chunk := await trio.to_thread.run_sync(sock.recv, 1 << 20):
        received += chunk
    return received


async def test_a_frame_the_kernel_takes_at_once_is_written_without_waiting():
    conn, server = _connection()
    assert conn.send_text_nowait(b"hello") is None
    assert conn.send_text_nowait(b"again") is None
    assert _client_frames(server.recv(1000)) == [(OP_TEXT, b"hello"), (OP_TEXT, b"again")]


async def test_the_rest_of_a_partial_write_goes_out_before_any_other_frame(nursery):
    conn, server = _connection()
    big = bytes(range(256)) * 8192  # 2 MiB: more than the socket buffers take
    first = conn.send_text_nowait(big)
    assert first is not None  # part of it is written, the rest waits for the kernel
    # Meanwhile a control frame (a ping's answer) and another text frame want the wire.
    pong_sent = trio.Event()

    async def answer_ping() -> None:
        await conn._send_control(OP_PONG, b"pong")
        pong_sent.set()

    nursery.start_soon(answer_ping)
    await trio.testing.wait_all_tasks_blocked()
    queued = conn.send_text_nowait(b"third")
    assert queued is not None  # nothing may go between: it waits its turn
    reading = trio.Event()
    received = []

    async def read() -> None:
        received.append(await _read_all(server))
        reading.set()

    nursery.start_soon(read)
    with trio.fail_after(10):
        async with trio.open_nursery() as writers:
            writers.start_soon(first.finish)
            writers.start_soon(queued.finish)
        await pong_sent.wait()
    await conn.aclose_now()
    await reading.wait()
    assert _client_frames(received[0]) == [(OP_TEXT, big), (OP_PONG, b"pong"), (OP_TEXT, b"third")]


async def test_a_connection_comes_from_the_source_address_it_is_given():
    """Through one load balancer port, each loopback source address has ports of its own."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with listener:
        _, stream = await _open_tcp("127.0.0.1", port, "127.0.0.3")
        async with stream:
            accepted = await listener.accept()
            async with accepted:
                assert accepted.socket.getpeername()[0] == "127.0.0.3"


async def test_bytes_not_read_yet_are_seen_without_reading_them():
    conn, server = _connection()
    assert not conn.has_unread_bytes()
    server.send(server_frame(b"late"))
    assert conn.has_unread_bytes() and conn.has_unread_bytes()  # only looked at
    assert await conn.receive() == [b"late"]
    assert not conn.has_unread_bytes()
    server.close()
    assert conn.has_unread_bytes()  # the end of the stream is news too
    await conn.aclose_now()
    assert not conn.has_unread_bytes()
