"""WebSocket wire format for the server side: handshake, frame encoding and parsing.

Server-to-client frames are unmasked, so one encoded frame serves every recipient: the fan-out
encodes each message once per node and every session writes the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import CloseConnection, Message, Ping

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OPCODE_TEXT = 0x1
OPCODE_CLOSE = 0x8

CLOSE_NORMAL = 1000
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013


def accept_key(client_key: str) -> str:
    return base64.b64encode(hashlib.sha1(client_key.encode("ascii") + _GUID).digest()).decode("ascii")


def handshake_response(client_key: str) -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(client_key)}\r\n\r\n"
    ).encode("ascii")


def _frame(opcode: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + payload


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented text frame around UTF-8 `payload`."""
    return _frame(OPCODE_TEXT, payload)


def close_frame(code: int, reason: str) -> bytes:
    # A close frame's payload is at most 125 bytes; cut the reason on a character boundary.
    reason_bytes = reason.encode()[:120].decode("utf-8", "ignore").encode()
    return _frame(OPCODE_CLOSE, struct.pack("!H", code) + reason_bytes)


class IncomingText:
    """A complete client message: its text, or why there is none (binary, too large)."""

    __slots__ = ("text", "too_large", "binary")

    def __init__(self, text: str | None, *, too_large: bool = False, binary: bool = False) -> None:
        self.text, self.too_large, self.binary = text, too_large, binary


class FrameReader:
    """Parses client frames (masked, possibly fragmented) with wsproto, bounding message size."""

    def __init__(self, max_message_bytes: int) -> None:
        self._ws = Connection(ConnectionType.SERVER)
        self._max = max_message_bytes
        self._parts: list[str] = []
        self._size = 0
        self._oversized = False
        self._binary = False
        self.peer_close_code: int | None = None

    def feed(self, data: bytes) -> tuple[list[IncomingText], bytes]:
        """Complete messages in `data`, and the bytes to write back (pongs).

        A close from the peer sets `peer_close_code`; the caller answers it with a close frame."""
        self._ws.receive_data(data or None)
        messages: list[IncomingText] = []
        reply = b""
        for event in self._ws.events():
            if isinstance(event, Message):
                done = self._collect(event)
                if done is not None:
                    messages.append(done)
            elif isinstance(event, Ping):
                reply += self._ws.send(event.response())
            elif isinstance(event, CloseConnection):
                self.peer_close_code = CLOSE_NORMAL if event.code in (1005, 1006) else event.code
        return messages, reply

    def _collect(self, event: Message) -> IncomingText | None:
        if isinstance(event.data, (bytes, bytearray)):
            self._binary = True
        elif not self._oversized:
            self._size += len(event.data.encode())
            if self._size > self._max:
                self._oversized, self._parts = True, []
            else:
                self._parts.append(event.data)
        if not event.message_finished:
            return None
        result = IncomingText(None if self._binary or self._oversized else "".join(self._parts),
                              too_large=self._oversized, binary=self._binary)
        self._parts, self._size, self._oversized, self._binary = [], 0, False, False
        return result
