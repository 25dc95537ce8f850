"""A minimal WebSocket client over trio.SocketStream, built for receive throughput.

The bot only needs text frames to and from a server it trusts, so this is a small subset of
RFC 6455: a hand-written HTTP upgrade, masked client frames, and a parser for unmasked server
frames. A general-purpose client (trio-websocket) spends most of its time in per-frame event
objects; here one read returns every complete message in the buffer at once.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import select
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

import trio

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEADER_BYTES = 16 * 1024
# recv(n) allocates n bytes before shrinking to what arrived: at 256 KiB that allocation alone cost
# ~80 µs per call here (glibc serves it with mmap), which dominated thousands of sparse connections.
# 64 KiB still holds a few hundred chat frames per read.
_RECEIVE_BYTES = 64 * 1024
# The server caps frames at 64 KiB; anything far larger means we lost framing.
MAX_MESSAGE_BYTES = 1 << 20
# Linux's IP_BIND_ADDRESS_NO_PORT (not in every Python's socket module)
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class WsError(Exception):
    """The connection cannot be used any more (handshake refused, protocol error, closed)."""


class HandshakeRefused(WsError):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"upgrade refused with HTTP {status}: {body[:200]!r}")
        self.status = status


@dataclass(frozen=True, slots=True)
class CloseInfo:
    code: int
    reason: str


class FrameParser:
    """Incremental parser of server-to-client frames (unmasked).

    `feed(data)` returns the payloads of the complete text messages, in order. Control frames
    do not interrupt that list: pings are queued in `pings` for the caller to answer, and a close
    frame sets `closed` (everything after it is ignored).
    """

    __slots__ = ("_buf", "_fragments", "_fragment_size", "pings", "closed")

    def __init__(self) -> None:
        self._buf = b""
        self._fragments: list[bytes] | None = None
        self._fragment_size = 0
        self.pings: list[bytes] = []
        self.closed: CloseInfo | None = None

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2 and self.closed is None:
            b0 = buf[pos]
            length = buf[pos + 1]
            if length & 0x80:
                raise WsError("server frame is masked")
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif length == 127:
                if end - pos < 10:
                    break
                (length,) = struct.unpack_from(">Q", buf, pos + 2)
                head = 10
            if length > MAX_MESSAGE_BYTES:
                raise WsError(f"frame of {length} bytes is too large")
            start = pos + head
            stop = start + length
            if stop > end:
                break
            pos = stop
            if b0 == 0x81:  # FIN + text: the only frame kind on the hot path
                if self._fragments is not None:
                    raise WsError("text frame inside a fragmented message")
                out.append(buf[start:stop])
            else:
                self._other(b0, buf[start:stop], out)
        self._buf = buf[pos:] if pos < end else b""
        return out

    def _other(self, b0: int, payload: bytes, out: list[bytes]) -> None:
        if b0 & 0x70:
            raise WsError("reserved bits set (no extension was negotiated)")
        fin = b0 & 0x80
        opcode = b0 & 0x0F
        if opcode >= OP_CLOSE:
            if not fin or len(payload) > 125:
                raise WsError("bad control frame")
            if opcode == OP_PING:
                self.pings.append(payload)
            elif opcode == OP_CLOSE:
                code = struct.unpack_from(">H", payload)[0] if len(payload) >= 2 else 1005
                self.closed = CloseInfo(code, payload[2:].decode("utf-8", "replace"))
            return
        if opcode == OP_BINARY:
            raise WsError("binary frame from server")
        if opcode == OP_TEXT:
            if self._fragments is not None:
                raise WsError("text frame inside a fragmented message")
            self._fragments, self._fragment_size = [payload], len(payload)
            return
        if opcode != OP_CONTINUATION or self._fragments is None:
            raise WsError(f"unexpected opcode {opcode}")
        self._fragments.append(payload)
        self._fragment_size += len(payload)
        if self._fragment_size > MAX_MESSAGE_BYTES:
            raise WsError("fragmented message is too large")
        if fin:
            out.append(b"".join(self._fragments))
            self._fragments = None


def mask_payload(payload: bytes, mask: bytes) -> bytes:
    """XOR with the repeated 4-byte mask, done as one big-int operation (fast in CPython)."""
    n = len(payload)
    if n == 0:
        return payload
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def encode_client_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final, masked client frame (clients must mask, RFC 6455 5.3)."""
    if mask is None:
        mask = random.getrandbits(32).to_bytes(4, "little")
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + mask + mask_payload(payload, mask)


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def build_upgrade_request(host: str, port: int, target: str, token: str | None = None) -> tuple[bytes, str]:
    """The upgrade request; the token goes in a header, never in the URL (URLs are logged)."""
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    authorization = f"Authorization: Bearer {token}\r\n" if token else ""
    request = (
        f"GET {target} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"{authorization}"
        "\r\n"
    )
    return request.encode("latin-1"), key


def parse_upgrade_response(head: bytes, key: str) -> None:
    """Raise unless `head` (status line and headers, without the blank line) accepts the upgrade."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise WsError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    if status != 101:
        raise HandshakeRefused(status, b"")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("upgrade", "").lower() != "websocket":
        raise WsError("101 without Upgrade: websocket")
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise WsError("wrong Sec-WebSocket-Accept")


async def _open_tcp(host: str, port: int, source: str | None = None) -> tuple[socket.socket, trio.SocketStream]:
    """A connected SocketStream built on a stdlib socket we keep a handle on (first address only:
    the bot talks to known local nodes, it needs no happy eyeballs), from `source` if given."""
    family, kind, proto, _, address = (await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    tsock = trio.socket.from_stdlib_socket(sock)
    try:
        if source is not None:
            # the port is chosen at connect(), unique per destination, not per source address alone
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        await tsock.connect(address)
    except BaseException:
        tsock.close()
        raise
    return sock, trio.SocketStream(tsock)


class UnfinishedWrite:
    """A frame that `send_text_nowait` could not write at once. It keeps its place on the wire:
    nothing else is written on the connection until `finish()` has written it."""

    __slots__ = ("_conn", "_rest", "_has_turn")

    def __init__(self, conn: WsConnection, rest: memoryview, has_turn: bool) -> None:
        self._conn = conn
        self._rest = rest
        self._has_turn = has_turn  # False: another frame was on its way, ours waits for the turn

    async def finish(self) -> None:
        conn = self._conn
        if not self._has_turn:
            await conn._write_turn.acquire()
        try:
            await conn._stream.send_all(self._rest)
        finally:
            conn._write_turn.release()


class WsConnection:
    """One client connection. Not safe for concurrent `receive`s. Frames are written one at a
    time (`_write_turn`), so a ping answer cannot land inside a SEND.

    In steady state a worker's shared receiver (receiver.py) reads the socket through
    `receive_nowait`; what only the owner's task can handle is left for `receive`."""

    def __init__(self, sock: socket.socket, stream: trio.SocketStream, leftover: bytes) -> None:
        self._sock = sock  # the stdlib socket under `stream`, for the fast paths
        self._stream = stream
        self._parser = FrameParser()
        self._leftover = leftover
        # A Semaphore, not a Lock: a write the send clock starts without waiting may have to be
        # finished by another task, and a trio.Lock may only be released by the task holding it.
        self._write_turn = trio.Semaphore(1)
        # Set by receive_nowait for `receive` to raise (the end of the stream, an error).
        self._failure: BaseException | None = None
        # While the shared receiver watches this socket: called before it is closed, so that the
        # receiver forgets the descriptor before its number can be reused and wakes the owner.
        self.on_close: Callable[[], None] | None = None
        self.close_info: CloseInfo | None = None

    @classmethod
    async def connect(
        cls, host: str, port: int, target: str, timeout: float, token: str | None = None, source: str | None = None
    ) -> WsConnection:
        with trio.fail_after(timeout):
            sock, stream = await _open_tcp(host, port, source)
            try:
                request, key = build_upgrade_request(host, port, target, token)
                await stream.send_all(request)
                buf = b""
                while (idx := buf.find(b"\r\n\r\n")) < 0:
                    if len(buf) > _MAX_HEADER_BYTES:
                        raise WsError("upgrade response headers too large")
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        raise WsError("connection closed during the upgrade")
                    buf += chunk
                try:
                    parse_upgrade_response(buf[:idx], key)
                except HandshakeRefused as exc:
                    raise HandshakeRefused(exc.status, buf[idx + 4 :]) from None
            except BaseException:
                stream.socket.close()
                raise
        return cls(sock, stream, buf[idx + 4 :])

    def fileno(self) -> int:
        return self._sock.fileno()

    # -- sending ------------------------------------------------------------------------------

    async def send_text(self, payload: bytes) -> None:
        await self._send_frame(encode_client_frame(OP_TEXT, payload))

    def send_text_nowait(self, payload: bytes) -> UnfinishedWrite | None:
        """Write a text frame without waiting: one system call and no task switch when nothing
        else is being written and the kernel takes the whole frame (the normal case). Otherwise
        returns the part still to write, which keeps its place: the caller must `finish()` it.
        Raises OSError when the connection is broken."""
        frame = encode_client_frame(OP_TEXT, payload)
        if self._write_turn.value == 0:
            return UnfinishedWrite(self, memoryview(frame), has_turn=False)
        try:
            sent = self._sock.send(frame)
        except BlockingIOError:
            sent = 0
        if sent == len(frame):
            return None
        self._write_turn.acquire_nowait()  # nothing else may be written before the rest
        return UnfinishedWrite(self, memoryview(frame)[sent:], has_turn=True)

    async def _send_frame(self, frame: bytes) -> None:
        async with self._write_turn:
            await self._stream.send_all(frame)

    # -- receiving ----------------------------------------------------------------------------

    def receive_nowait(self) -> list[bytes]:
        """For a socket known to be readable: one read, and the text messages it completed.
        Anything else (a ping to answer, a close frame, the end of the stream, an error) is kept
        for `receive` and makes `needs_task` true; this never waits and never raises."""
        try:
            data = self._sock.recv(_RECEIVE_BYTES)
        except BlockingIOError:
            return []
        except OSError as exc:
            self._failure = exc
            return []
        if not data:
            self._failure = WsError("connection closed without a close frame")
            return []
        try:
            return self._parser.feed(data)
        except WsError as exc:
            self._failure = exc
            return []

    @property
    def needs_task(self) -> bool:
        """Whether `receive` has something to handle that `receive_nowait` cannot."""
        parser = self._parser
        return self._failure is not None or parser.closed is not None or bool(parser.pings) or bool(self._leftover)

    def has_unread_bytes(self) -> bool:
        """Whether the server has sent something (or closed) that nobody has read yet; never
        waits. A process stalled on a busy machine wakes up to an answer that arrived in time
        but is still in the kernel's buffer."""
        if self._leftover:
            return True
        poll = select.poll()
        try:
            poll.register(self._sock, select.POLLIN)
        except (OSError, ValueError):  # closed here
            return False
        return bool(poll.poll(0))

    def fail(self, exc: BaseException) -> None:
        """Make `receive` raise `exc` (e.g. the accounting found the session unusable)."""
        if self._failure is None:
            self._failure = exc

    async def receive(self) -> list[bytes]:
        """Text messages that are complete (possibly none); raises WsError once closed. What
        `receive_nowait` left (control frames, a failure) is handled first, without reading."""
        if self._failure is not None:
            raise self._failure
        if self.close_info is not None:
            raise WsError(f"closed by server: {self.close_info.code} {self.close_info.reason}")
        if self._parser.pings or self._parser.closed is not None:
            messages: list[bytes] = []  # receive_nowait already returned the messages before them
        else:
            messages = self._parser.feed(await self._read())
        if self._parser.pings:
            pings, self._parser.pings = self._parser.pings, []
            for payload in pings:
                await self._send_control(OP_PONG, payload)
        if self._parser.closed is not None and self.close_info is None:
            self.close_info = self._parser.closed
            # Echo the close so the server can finish cleanly; it may already be gone.
            with trio.move_on_after(1):
                try:
                    await self._send_control(OP_CLOSE, struct.pack(">H", self.close_info.code))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
        if self.close_info is not None and not messages:
            raise WsError(f"closed by server: {self.close_info.code} {self.close_info.reason}")
        return messages

    async def _read(self) -> bytes:
        if self._leftover:
            data, self._leftover = self._leftover, b""
            return data
        # Wait, then recv on the stdlib socket: a checkpoint and one system call per read, about
        # 40 % less CPU than SocketStream.receive_some when every read brings one frame.
        while True:
            await trio.lowlevel.wait_readable(self._sock)
            try:
                data = self._sock.recv(_RECEIVE_BYTES)
                break
            except BlockingIOError:
                continue
        if not data:
            raise WsError("connection closed without a close frame")
        return data

    async def _send_control(self, opcode: int, payload: bytes) -> None:
        await self._send_frame(encode_client_frame(opcode, payload))

    # -- closing ------------------------------------------------------------------------------

    async def close(self, code: int = 1000, timeout: float = 2.0) -> None:
        """Send a close frame and wait (briefly) for the server to close the TCP connection."""
        with trio.move_on_after(timeout):
            try:
                if self.close_info is None:
                    await self._send_control(OP_CLOSE, struct.pack(">H", code))
                while await self._stream.receive_some(_RECEIVE_BYTES):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await self.aclose_now()

    async def aclose_now(self) -> None:
        self.fail(trio.ClosedResourceError("the connection was closed here"))
        if self.on_close is not None:
            self.on_close()
        with trio.CancelScope(shield=True):
            await self._stream.aclose()
