"""WebSocket wire format for the server side: handshake, frame encoding and parsing.

Server-to-client frames are unmasked, so one encoded frame serves every recipient: the fan-out
encodes each message once per node and every session writes the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import struct

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA
_KNOWN_OPCODES = frozenset({OPCODE_CONTINUATION, OPCODE_TEXT, OPCODE_BINARY, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG})

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_TOKEN_EXPIRED = 4001  # application code (4000-4999): the session's token reached its `exp`
# Codes a peer may send (RFC 6455 7.4.1 and the IANA registry; 1004-1006 and 1015 are not sent).
_REMOTE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})
# Frames one message may span: an empty continuation frame adds no bytes, so the byte cap alone
# would let a client send them forever into one message.
MAX_FRAGMENTS = 1024


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


def binary_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented binary frame (only the test echo route sends them)."""
    return _frame(OPCODE_BINARY, payload)


def ping_frame() -> bytes:
    """An empty server ping; any frame the client sends back, the pong included, shows it is alive."""
    return _frame(OPCODE_PING, b"")


def close_frame(code: int, reason: str) -> bytes:
    # A close frame's payload is at most 125 bytes; cut the reason on a character boundary.
    reason_bytes = reason.encode()[:120].decode("utf-8", "ignore").encode()
    return _frame(OPCODE_CLOSE, struct.pack("!H", code) + reason_bytes)


class IncomingText:
    """A complete client message: its text, or why there is none (binary, too large). `data` is
    a binary message's payload when the reader keeps binary messages (the test echo route)."""

    __slots__ = ("text", "too_large", "binary", "data")

    def __init__(
        self, text: str | None, *, too_large: bool = False, binary: bool = False, data: bytes | None = None
    ) -> None:
        self.text, self.too_large, self.binary, self.data = text, too_large, binary, data


class FrameReader:
    """Parses client frames (masked, possibly fragmented), bounding message size.

    Written for the common case, one small complete text frame per read, which a general
    WebSocket library (wsproto) parsed at ~32 µs a frame through its event objects. A frame or
    message over the limit (in bytes, or in fragments), or a binary one (unless `keep_binary`), is
    skipped as it streams in, never buffered. A fragmented message grows one bytearray. A protocol error sets
    `peer_close_code` (1002, or 1007 for invalid UTF-8) and stops parsing.
    """

    __slots__ = (
        "_max",
        "_max_fragments",
        "_keep_binary",
        "_buf",
        "_parts",
        "_fragments",
        "_discard",
        "_oversized",
        "_binary",
        "_skip",
        "_skip_fin",
        "peer_close_code",
    )

    def __init__(
        self, max_message_bytes: int, *, max_fragments: int = MAX_FRAGMENTS, keep_binary: bool = False
    ) -> None:
        self._max = max_message_bytes
        self._max_fragments = max_fragments
        self._keep_binary = keep_binary
        self._buf = b""
        self._parts: bytearray | None = None  # the payload so far of an unfinished message
        self._fragments = 0  # frames of the unfinished message so far
        self._discard = False  # the unfinished message is dropped (too large or binary)
        self._oversized = False
        self._binary = False  # the unfinished message is binary
        self._skip = 0  # payload bytes of the current frame still to drop
        self._skip_fin = False
        self.peer_close_code: int | None = None

    def feed(self, data: bytes) -> tuple[list[IncomingText], bytes]:
        """Complete messages in `data`, and the bytes to write back (pongs).

        A close from the peer sets `peer_close_code`; the caller answers it with a close frame."""
        messages: list[IncomingText] = []
        reply = b""
        if self.peer_close_code is not None:
            return messages, reply
        buf = self._buf + data if self._buf else data
        pos, end = 0, len(buf)
        if self._skip:
            pos = self._skip_payload(buf, pos, end, messages)
        while pos < end and not self._skip and self.peer_close_code is None:
            header = self._header(buf, pos, end)
            if header is None:
                break  # an incomplete header: wait for more
            fin, opcode, length, start = header
            if opcode >= OPCODE_CLOSE:
                if end - start < length:
                    break
                reply += self._control(opcode, _unmask(buf, start - 4, length))
                pos = start + length
            elif self._discard or self._over_limit(length) or (opcode == OPCODE_BINARY and not self._keep_binary):
                self._start_discarding(opcode, length)
                self._skip, self._skip_fin = length, fin
                pos = self._skip_payload(buf, start, end, messages)
            else:
                if end - start < length:
                    break
                self._data(fin, opcode, _unmask(buf, start - 4, length), messages)
                pos = start + length
        self._buf = buf[pos:] if pos < end and self.peer_close_code is None else b""
        return messages, reply

    def _header(self, buf: bytes, pos: int, end: int) -> tuple[bool, int, int, int] | None:
        """(fin, opcode, payload length, payload start) of the frame at `pos`, None if incomplete."""
        if end - pos < 2:
            return None
        b0, b1 = buf[pos], buf[pos + 1]
        length = b1 & 0x7F
        head = 2
        if length == 126:
            head = 4
        elif length == 127:
            head = 10
        if end - pos < head + 4:
            return None
        if length == 126:
            length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
        elif length == 127:
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
        opcode = b0 & 0x0F
        if b0 & 0x70 or not b1 & 0x80 or length >> 63:
            return self._protocol_error()  # reserved bits (no extensions), unmasked, bad length
        if opcode >= OPCODE_CLOSE and (not b0 & 0x80 or length > 125):
            return self._protocol_error()
        if opcode not in _KNOWN_OPCODES:
            return self._protocol_error()
        in_message = self._parts is not None or self._discard
        if opcode < OPCODE_CLOSE and (opcode == OPCODE_CONTINUATION) != in_message:
            return self._protocol_error()  # a continuation of nothing, or a new message inside one
        return bool(b0 & 0x80), opcode, length, pos + head + 4

    def _over_limit(self, length: int) -> bool:
        """True when a data frame of `length` bytes would take its message over a cap."""
        if self._parts is None:
            return length > self._max
        return len(self._parts) + length > self._max or self._fragments >= self._max_fragments

    def _start_discarding(self, opcode: int, length: int) -> None:
        """The current message is dropped (binary, or too large); its frames are skipped."""
        if not self._discard:
            if opcode != OPCODE_CONTINUATION:
                self._binary = opcode == OPCODE_BINARY
            self._oversized = self._over_limit(length)
            self._discard, self._parts = True, None

    def _skip_payload(self, buf: bytes, pos: int, end: int, messages: list[IncomingText]) -> int:
        taken = min(self._skip, end - pos)
        self._skip -= taken
        if not self._skip and self._skip_fin:
            self._finish(None, messages)
        return pos + taken

    def _data(self, fin: bool, opcode: int, payload: bytes, messages: list[IncomingText]) -> None:
        if opcode != OPCODE_CONTINUATION:
            self._binary = opcode == OPCODE_BINARY
        if fin and self._parts is None:
            self._finish(payload, messages)  # the usual case: one frame, one message
            return
        if self._parts is None:
            self._parts = bytearray()
        self._parts += payload
        self._fragments += 1
        if fin:
            self._finish(self._parts, messages)

    def _finish(self, payload: bytes | bytearray | None, messages: list[IncomingText]) -> None:
        text = data = None
        if payload is not None and self._binary:
            data = bytes(payload)
        elif payload is not None:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                self.peer_close_code = CLOSE_INVALID_DATA
                return
        messages.append(IncomingText(text, too_large=self._oversized, binary=self._binary, data=data))
        self._parts, self._fragments, self._discard, self._oversized, self._binary = None, 0, False, False, False

    def _control(self, opcode: int, payload: bytes) -> bytes:
        if opcode == OPCODE_PING:
            return _frame(OPCODE_PONG, payload)
        if opcode == OPCODE_CLOSE:
            self.peer_close_code = _close_code_of(payload)
        return b""  # a pong needs nothing

    def _protocol_error(self) -> tuple[bool, int, int, int] | None:  # _header's answer: no frame
        self.peer_close_code = CLOSE_PROTOCOL_ERROR
        return None


def _unmask(buf: bytes, mask_at: int, length: int) -> bytes:
    """The payload after the 4-byte mask at `mask_at`, unmasked as one big-int XOR (fast in CPython)."""
    if not length:
        return b""
    start = mask_at + 4
    key = (buf[mask_at:start] * ((length >> 2) + 1))[:length]
    return (int.from_bytes(buf[start : start + length], "little") ^ int.from_bytes(key, "little")).to_bytes(
        length, "little"
    )


def _close_code_of(payload: bytes) -> int:
    """The code to answer a client's close with (RFC 6455 7.4: no code means a normal close)."""
    if not payload:
        return CLOSE_NORMAL
    code = int.from_bytes(payload[:2], "big")
    if len(payload) == 1 or not (code in _REMOTE_CLOSE_CODES or 3000 <= code <= 4999):
        return CLOSE_PROTOCOL_ERROR
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return CLOSE_INVALID_DATA
    return code
