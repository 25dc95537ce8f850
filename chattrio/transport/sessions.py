"""WebSocket sessions on this node: bounded send buffers, and who is in which room."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Callable

import msgspec
import trio

from chattrio.frames import encode_frame
from chattrio.transport.http11 import READ_SIZE
from chattrio.transport.websocket import CLOSE_TRY_AGAIN_LATER, close_frame, text_frame

log = logging.getLogger(__name__)

WRITE_TIMEOUT = 30.0
CLOSE_TIMEOUT = 2.0


class Session:
    """One WebSocket connection and its bounded send buffer.

    A frame goes straight to the socket with a non-blocking send when nothing is queued: most
    deliveries cost one system call and no task switch. What the kernel does not take is queued,
    and only then is a writer task started, which merges everything pending into one write and
    ends when the backlog is written: an idle session has no task but its reader. `last_received`
    is the time (trio's clock) the connection last received bytes: the liveness sweep reads it.
    `batches`: the client asked for a room's messages of one fan-out cycle in one MESSAGES frame
    (`/ws?batch=1`).
    """

    __slots__ = (
        "id",
        "user_id",
        "rooms",
        "wants_room_events",
        "_pending",
        "_pending_bytes",
        "_limit",
        "_written",
        "_closing",
        "close_code",
        "close_sent",
        "read_ended",
        "_on_slow",
        "_write_scope",
        "_stream",
        "_raw",
        "_writers",
        "_writing",
        "_reader_done",
        "_writer_done",
        "_head_started",
        "last_received",
        "batches",
    )

    def __init__(
        self, user_id: str, buffer_limit: int, on_slow: Callable[[], object] | None = None, batches: bool = False
    ) -> None:
        self.id = uuid.uuid4().hex
        self.user_id = user_id
        self.rooms: set[int] = set()
        self.wants_room_events = False
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._limit = buffer_limit
        self._written: trio.Event | None = None  # made when drained() waits
        self._closing = False
        self.close_code: int | None = None
        self.close_sent = False
        self.read_ended = False  # the client's close frame, or the end of its stream, was read
        self._on_slow = on_slow
        self._write_scope: trio.CancelScope | None = None
        self._stream: trio.SocketStream | None = None
        self._raw: socket.socket | None = None
        self._writers: trio.Nursery | None = None
        self._writing = False
        self._reader_done: trio.Event | None = None  # made when the writer waits for the close reply
        self._writer_done: trio.Event | None = None  # made when finish() waits for the writer
        # The first pending chunk is the rest of a frame partly sent already: a close must not
        # drop it, or the client would read the close frame as that frame's payload.
        self._head_started = False
        self.last_received = 0.0
        self.batches = batches

    @property
    def closing(self) -> bool:
        return self._closing

    def push(self, frame: bytes) -> None:
        """Send or queue an encoded frame; a client that cannot keep up is closed, not buffered."""
        if self.queue(frame):
            self.flush()

    def queue(self, frame: bytes) -> bool:
        """Add a frame without writing it yet; True when it is the first one waiting (the caller
        then owes a flush). The fan-out queues a whole fetched batch, then flushes each session
        once, so a session receives many messages in one write."""
        if self._closing:
            return False
        if self._pending_bytes + len(frame) > self._limit:
            if self._on_slow is not None:
                self._on_slow()
            self.close(CLOSE_TRY_AGAIN_LATER, "too slow", drop_backlog=True)
            return False
        first = not self._pending
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        return first

    def flush(self) -> None:
        """Write what is queued: straight to the socket when no writer task runs; what the
        kernel does not take, by one."""
        if self._closing or not self._pending or self._raw is None or self._writing:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        try:
            sent = self._raw.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # the writer meets the same error and ends the connection
        if sent == len(data):
            self._pending, self._pending_bytes = [], 0
            self._wake_drained()
            return
        self._pending = [data[sent:]]
        self._pending_bytes = len(data) - sent
        self._head_started = sent > 0
        self._start_writer()

    def send(self, frame: msgspec.Struct) -> None:
        self.push(text_frame(encode_frame(frame)))

    def close(self, code: int, reason: str, *, drop_backlog: bool = False) -> None:
        """Queue a close frame after what is queued (or, with `drop_backlog`, after the rest of a
        frame already begun only), and let the writer finish."""
        if self._closing:
            return
        if drop_backlog:
            self._pending = self._pending[:1] if self._head_started else []
        self._pending.append(close_frame(code, reason))
        self._pending_bytes = sum(map(len, self._pending))
        self.close_code = code
        self._closing = True
        if self._write_scope is not None:
            # A write in progress may be stuck on a client that stopped reading: bound it.
            self._write_scope.deadline = min(self._write_scope.deadline, trio.current_time() + CLOSE_TIMEOUT)
        if self._raw is not None and not self._writing:
            self._start_writer()

    @property
    def must_drain(self) -> bool:
        """More than half the buffer is used: a replay waits in `drained()` before going on."""
        return self._pending_bytes > self._limit // 2

    async def drained(self) -> None:
        """Wait until at most half the buffer is used, so a long replay cannot overflow it."""
        while self.must_drain and not self._closing:
            if self._written is None:
                self._written = trio.Event()
            await self._written.wait()

    def start_writing(self, stream: trio.SocketStream, writers: trio.Nursery) -> None:
        """From now on frames go to `stream`. A writer task, started in `writers` (the node's
        nursery of connections) only while there is a backlog, writes what the kernel did not
        take, then the close handshake. The session's own task reads with `receive()`, calls
        `finish()` when its reading is over, and `stop_writing()` before the stream closes."""
        # A second socket object on the same descriptor, for the direct sends and receive();
        # detached, not closed, by stop_writing(), since the stream owns the descriptor.
        self._raw = socket.socket(fileno=stream.socket.fileno())
        self._stream, self._writers = stream, writers
        if self._closing:
            self._start_writer()
        else:
            self.flush()

    async def finish(self) -> None:
        """The reading is over (the client's close frame, the end of its stream, or the reading
        shut by the writer): wait until the writer, if one runs, has written the close reply."""
        self.read_ended = True
        if self._reader_done is not None:
            self._reader_done.set()
        while self._writing:
            if self._writer_done is None:
                self._writer_done = trio.Event()
            await self._writer_done.wait()

    def stop_writing(self) -> None:
        if self._raw is not None:
            self._raw.detach()
        self._raw = self._stream = self._writers = None

    async def receive(self) -> bytes:
        """The next bytes from the client; b"" at the end of its stream. Call between
        start_writing() and stop_writing(). The wait is on the descriptor itself: an idle
        session's task is parked four frames deep, not eight as in SocketStream.receive_some,
        which is most of what an idle session costs (docs/decisions/session-memory.md)."""
        assert self._raw is not None
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            try:
                data = self._raw.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                await trio.lowlevel.wait_readable(self._raw)
                waited = True
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket error: {exc}") from exc
            else:
                if not waited:  # every receive lets other tasks run, as trio's own do
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return data

    def _start_writer(self) -> None:
        assert self._writers is not None
        self._writing = True
        self._writers.start_soon(self._write_backlog)

    def _wake_drained(self) -> None:
        if self._written is not None:
            self._written.set()
            self._written = None

    async def _write_backlog(self) -> None:
        """Write the queued frames until none is left. After the close frame, give the client
        CLOSE_TIMEOUT to answer with its own (RFC 6455 7.1.1), then shut the reading, which ends
        the session's task. This task runs in the node's nursery: nothing may escape it, and a
        failed write ends the connection the same way."""
        stream, raw = self._stream, self._raw
        assert stream is not None and raw is not None
        failed = False
        try:
            while self._pending and not self.close_sent:
                batch, self._pending, self._pending_bytes = self._pending, [], 0
                self._head_started = False
                closing = self._closing  # then the close frame is the batch's last
                with trio.fail_after(CLOSE_TIMEOUT if closing else WRITE_TIMEOUT) as self._write_scope:
                    await stream.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
                self._write_scope = None
                self.close_sent = closing
                self._wake_drained()
            if self.close_sent and not self.read_ended:
                self._reader_done = trio.Event()
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await self._reader_done.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
            failed = True
            log.debug("session write failed", extra={"session": self.id, "error": repr(exc)})
        except Exception:
            failed = True
            log.exception("session writer failed", extra={"session": self.id})
        finally:
            self._writing = False
            self._write_scope = None
            if failed:
                self._closing = True
                self._pending, self._pending_bytes = [], 0
            if (failed or self.close_sent) and not self.read_ended:
                _shut_reading(raw)
            self._wake_drained()
            if self._writer_done is not None:
                self._writer_done.set()


def _shut_reading(raw: socket.socket) -> None:
    """End the session task's reading: its receive() returns b"" (the kernel wakes the wait)."""
    try:
        raw.shutdown(socket.SHUT_RD)
    except OSError:
        pass  # not connected any more: the reading ends by itself, or the stream is closed


class SessionRegistry:
    """Which local sessions are in which room; delivery loops over these."""

    def __init__(self) -> None:
        self.sessions: set[Session] = set()
        # A user's sessions on this node, in a list: a few at most (the per-user cap), and an
        # idle node holds one per user, where a one-key dict would cost four times the memory.
        self._of_user: dict[str, list[Session]] = {}
        self._rooms: dict[int, dict[Session, None]] = {}
        self._room_watchers: dict[Session, None] = {}

    def add(self, session: Session) -> None:
        self.sessions.add(session)
        mine = self._of_user.get(session.user_id)
        if mine is None:
            self._of_user[session.user_id] = [session]
        else:
            mine.append(session)

    def sessions_of_user(self, user_id: str) -> int:
        return len(self._of_user.get(user_id, ()))

    def remove(self, session: Session) -> list[int]:
        """Forget a session; returns the rooms it was in."""
        if session in self.sessions:
            mine = self._of_user[session.user_id]
            mine.remove(session)
            if not mine:
                del self._of_user[session.user_id]
        self.sessions.discard(session)
        self._room_watchers.pop(session, None)
        rooms = list(session.rooms)
        for room_id in rooms:
            self.leave(session, room_id)
        return rooms

    def enter(self, session: Session, room_id: int) -> None:
        session.rooms.add(room_id)
        self._rooms.setdefault(room_id, {})[session] = None

    def leave(self, session: Session, room_id: int) -> None:
        session.rooms.discard(room_id)
        members = self._rooms.get(room_id)
        if members is not None:
            members.pop(session, None)
            if not members:
                del self._rooms[room_id]

    def watch_rooms(self, session: Session, on: bool) -> None:
        session.wants_room_events = on
        if on:
            self._room_watchers[session] = None
        else:
            self._room_watchers.pop(session, None)

    def queue_to_room(self, room_id: int, frame: bytes, to_flush: list[Session]) -> int:
        """Queue a frame for every local session in the room; sessions that now owe a flush are
        appended to `to_flush`. Returns the number of sessions."""
        members = self._rooms.get(room_id)
        if not members:
            return 0
        # A session that overflows only marks itself closing; it leaves the room when its
        # connection ends, so the dict does not change during this loop.
        for session in members:
            if session.queue(frame):
                to_flush.append(session)
        return len(members)

    def queue_many_to_room(
        self, room_id: int, frames: list[bytes], batched: Callable[[], list[bytes]], to_flush: list[Session]
    ) -> int:
        """Queue several frames of a room, in order, to every local session in it: `frames` one by
        one, or to a session that batches, `batched()` (called at most once). Returns the number
        of sessions."""
        members = self._rooms.get(room_id)
        if not members:
            return 0
        combined: list[bytes] | None = None
        for session in members:
            if session.batches:
                if combined is None:
                    combined = batched()
                queued = combined
            else:
                queued = frames
            for frame in queued:
                if session.queue(frame):
                    to_flush.append(session)
        return len(members)

    def deliver_to_room(self, room_id: int, frame: bytes) -> int:
        to_flush: list[Session] = []
        delivered = self.queue_to_room(room_id, frame, to_flush)
        for session in to_flush:
            session.flush()
        return delivered

    def deliver_to_user(self, user_id: str, frame: bytes) -> int:
        """Send a frame to every local session of the user; returns how many."""
        sessions = self._of_user.get(user_id, ())
        for session in sessions:
            session.push(frame)
        return len(sessions)

    def queue_to_room_except_user(self, room_id: int, user_id: str, frame: bytes, to_flush: list[Session]) -> int:
        """queue_to_room, leaving out the sessions of `user_id` (what a user does, told to the others)."""
        delivered = 0
        for session in self._rooms.get(room_id, ()):
            if session.user_id != user_id:
                delivered += 1
                if session.queue(frame):
                    to_flush.append(session)
        return delivered

    def deliver_to_room_watchers(self, frame: bytes) -> int:
        for session in self._room_watchers:
            session.push(frame)
        return len(self._room_watchers)

    def sessions_per_room(self) -> dict[tuple[str, ...], float]:
        return {(str(room_id),): len(members) for room_id, members in self._rooms.items()}

    def memberships(self) -> list[tuple[int, str, str]]:
        return [(room_id, s.user_id, s.id) for room_id, members in self._rooms.items() for s in members]
