"""A WebSocket client on a bare TCP stream, for tests that decide frame by frame what is sent
(unanswered pings, fragments, raw control frames)."""

from __future__ import annotations

import base64
import json
import os
import struct

import trio

from chattrio.bot.ws import encode_client_frame

TIMEOUT = 15.0


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
        with trio.fail_after(TIMEOUT):
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
                        opcode, payload = self._buf[0] & 0x0F, self._buf[offset : offset + length]
                        self._buf = self._buf[offset + length :]
                        return opcode, payload
            self._buf += await self._receive()

    async def send(self, opcode: int, payload: bytes) -> None:
        await self.stream.send_all(encode_client_frame(opcode, payload))

    async def send_json(self, **frame) -> None:
        await self.send(0x1, json.dumps(frame).encode())

    async def at_end(self) -> bool:
        """True when the server has closed the TCP connection (after any bytes still to read)."""
        with trio.fail_after(TIMEOUT):
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    return True

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def reply_to(self, ref: str) -> tuple[dict, list[tuple[int, bytes]]]:
        """The JSON frame that carries `ref`, and every other frame (opcode, payload) before it."""
        before: list[tuple[int, bytes]] = []
        while True:
            opcode, payload = await self.next_frame()
            if opcode == 0x1:
                frame = json.loads(payload)
                if frame.get("ref") == ref:
                    return frame, before
            before.append((opcode, payload))


def masked_frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes = b"\x12\x34\x56\x78") -> bytes:
    """One client frame, masked as RFC 6455 requires, written independently of the server's code."""
    length = len(payload)
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
