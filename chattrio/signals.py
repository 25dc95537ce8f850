"""READ and TYPING: what a user has read, and that a user is typing, told to other sessions.

A read position is stored in PostgreSQL first, with an outbox row in the same transaction; the
outbox relay publishes it to the events topic and every node's fan-out hands it to that user's
sessions. Typing goes to a topic of its own with short retention, straight from the session's
node without waiting for the broker; it is never stored, and the fan-out, which starts at the
end of the topics, never replays it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from chattrio.frames import Read, Typing
from chattrio.metrics import Registry
from chattrio.models import TypingRecord
from chattrio.roomlog import RoomLog
from chattrio.storage.contracts import MessageLog, ReadPositionStore
from chattrio.storage.postgres import DatabaseUnavailable
from chattrio.transport.sessions import Session

log = logging.getLogger(__name__)

# A session's TYPING frames for one room count at most once per this many seconds; the rest are
# ignored (and counted): a client sends one while the user types, at most this often.
TYPING_INTERVAL = 3.0
# A READ whose seq this node has not seen yet waits this long for it, looking at this interval.
READ_SEQ_WAIT = 2.0
READ_SEQ_POLL = 0.1
# The room list's unread counts stop at this: a client shows "99+".
UNREAD_CAP = 100

ErrorReply = Callable[[Session, str, str, "str | None"], None]


class Signals:
    def __init__(
        self, db: ReadPositionStore, producer: MessageLog, room_log: RoomLog, metrics: Registry, error: ErrorReply
    ) -> None:
        self._db = db
        self._producer = producer
        self._room_log = room_log
        self._error = error
        # session -> room id -> when its last TYPING counted (trio's clock)
        self._typed_at: dict[Session, dict[int, float]] = {}
        self._reads = metrics.counter("chattrio_read_positions_moved_total", "READ frames that moved a read position")
        self._typing_sent = metrics.counter("chattrio_typing_sent_total", "TYPING frames passed on to the typing topic")
        self._typing_ignored = metrics.counter(
            "chattrio_typing_ignored_total",
            "TYPING frames ignored: another one of the session and room came less than 3 s before",
        )

    async def read(self, session: Session, frame: Read) -> None:
        if frame.room_id not in session.rooms:
            return self._error(
                session, "NOT_SUBSCRIBED", f"enter room {frame.room_id} before marking it read", frame.ref
            )
        try:
            if not await self._seq_exists_yet(frame.room_id, frame.seq):
                return self._error(
                    session,
                    "BAD_FRAME",
                    f"seq {frame.seq} is beyond the newest message of room {frame.room_id}",
                    frame.ref,
                )
            if await self._db.mark_read(session.user_id, frame.room_id, frame.seq):
                self._reads.inc()
        except DatabaseUnavailable as exc:
            log.warning("read position not stored: %s", exc)
            self._error(session, "UNAVAILABLE", "read position not stored (database unavailable), retry", frame.ref)

    async def _seq_exists_yet(self, room_id: int, seq: int) -> bool:
        """Whether the room has a message at `seq` or later. A client marks read only what it
        was sent, but its own message's ACK may come before this node's fan-out has read the
        message back: a seq beyond what the node knows gets a moment to arrive."""
        give_up_at = trio.current_time() + READ_SEQ_WAIT
        while True:
            newest = self._room_log.last_seq(room_id)
            if newest is not None and seq <= newest:
                return True
            stored = await self._db.last_seq(room_id)
            if stored is not None and seq <= stored:
                return True
            if trio.current_time() >= give_up_at:
                return False
            await trio.sleep(READ_SEQ_POLL)

    def typing(self, session: Session, frame: Typing) -> None:
        if frame.room_id not in session.rooms:
            return self._error(session, "NOT_SUBSCRIBED", f"enter room {frame.room_id} before typing in it", frame.ref)
        now = trio.current_time()
        rooms = self._typed_at.setdefault(session, {})
        last = rooms.get(frame.room_id)
        if last is not None and now - last < TYPING_INTERVAL:
            self._typing_ignored.inc()
            return
        rooms[frame.room_id] = now
        if self._producer.produce_typing(TypingRecord(frame.room_id, session.user_id)):
            self._typing_sent.inc()

    def forget(self, session: Session) -> None:
        self._typed_at.pop(session, None)
