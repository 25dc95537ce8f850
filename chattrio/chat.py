"""What a session's frames do: enter and leave rooms, resume without gaps, send messages."""

from __future__ import annotations

import logging
from collections import OrderedDict
from functools import partial

import trio

from chattrio.config import Settings
from chattrio.frames import (
    ROOMS_DESTINATION,
    AckFrame,
    ClientFrame,
    ErrorFrame,
    Ping,
    PongFrame,
    Read,
    RoomMessageFrame,
    Send,
    Subscribe,
    SubscribedFrame,
    Typing,
    Unsubscribe,
    UnsubscribedFrame,
    encode_frame,
    room_id_of,
)
from chattrio.limits import ConnectionLimits, FrameLimits, retry_after_ms
from chattrio.metrics import Registry
from chattrio.models import ChatRecord, Message, message_id
from chattrio.presence import Presence
from chattrio.roomlog import RoomLog
from chattrio.rooms import RoomDirectory
from chattrio.signals import Signals
from chattrio.storage.contracts import ChatStore, MessageCache, MessageLog
from chattrio.storage.kafka import KafkaUnavailable, PendingSend
from chattrio.storage.postgres import DatabaseUnavailable
from chattrio.storage.redis import CacheUnavailable
from chattrio.transport.sessions import Session, SessionRegistry
from chattrio.transport.websocket import CLOSE_POLICY_VIOLATION, text_frame
from chattrio.validation import InvalidInput, check_client_msg_id, check_message_text

log = logging.getLogger(__name__)

RESUME_PAGE = 500
# ... and at most about this much text, so a page of long messages stays small in the node's memory.
RESUME_PAGE_TEXT_BYTES = 256 * 1024
# A resume replays at most this many stored messages; a client further behind loads history over
# REST instead (a replay holds the session's buffer and a database cursor for its whole length).
REPLAY_LIMIT = 1000
# A resume that needs messages this node no longer holds waits this long for them to be stored
# (the persistence group may be catching up after an outage), polling storage at this interval.
RESUME_CATCH_UP_TIMEOUT = 5.0
RESUME_CATCH_UP_POLL = 0.25
RECENT_ACKS = 100_000
# SENDs of one session handed to Kafka and not answered yet; at this many the session's next SEND
# waits for one to settle (the reader stops reading: back-pressure, not an error).
MAX_SENDS_IN_FLIGHT = 32
PRODUCE_LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
# The rate-limit buckets (chattrio/limits.py) each client frame draws from.
# READ and TYPING are a user's state changes, like entering and leaving a room.
LIMIT_KIND = {
    Send: "send",
    Subscribe: "subscribe",
    Unsubscribe: "subscribe",
    Ping: "ping",
    Read: "subscribe",
    Typing: "subscribe",
}


class HistoryNotStored(Exception):
    """A resume needs messages that this node no longer holds and storage does not hold yet."""


class ReplayTooLong(Exception):
    """More than REPLAY_LIMIT stored messages follow a resume's `since`."""


class ChatService:
    def __init__(
        self,
        settings: Settings,
        sessions: SessionRegistry,
        room_log: RoomLog,
        rooms: RoomDirectory,
        producer: MessageLog,
        db: ChatStore,
        cache: MessageCache,
        presence: Presence,
        metrics: Registry,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._room_log = room_log
        self._rooms = rooms
        self._producer = producer
        self._db = db
        self._cache = cache
        self._presence = presence
        self._frame_limits = FrameLimits(settings, metrics)
        self._signals = Signals(db, producer, room_log, metrics, self.error)
        self._connection_limits: dict[Session, ConnectionLimits] = {}
        # Sends this node acknowledged, by message id: a retry answers the same ACK even before
        # the fan-out has read the original back (the fan-out's ids cover the other nodes' sends).
        self._recent_acks: OrderedDict[str, int] = OrderedDict()  # message id -> seq
        # Sends handed to Kafka and not settled, by message id: a retry meanwhile waits for the
        # same delivery instead of producing again. At most MAX_SENDS_IN_FLIGHT per session.
        self._in_flight: dict[str, PendingSend] = {}
        self._send_slots: dict[Session, trio.Semaphore] = {}
        # Partitions storage holds up to where this node's fan-out started them.
        self._partitions_stored_to_start: set[int] = set()
        self._received = metrics.counter("chattrio_messages_received_total", "SEND frames accepted")
        self._errors = metrics.counter("chattrio_frame_errors_total", "ERROR frames sent, by code", ["code"])
        self._produce_latency = metrics.histogram(
            "chattrio_produce_latency_ms",
            "SEND handed to the producer until the broker acknowledged, milliseconds",
            PRODUCE_LATENCY_BUCKETS_MS,
        )

    def error(self, session: Session, code: str, message: str, ref: str | None) -> None:
        self._errors.inc(1, code)
        session.send(ErrorFrame(code, message, ref))

    def bad_frame(self, session: Session, code: str, message: str, ref: str | None) -> None:
        """An ERROR for a frame that is not one of the client frames; these count as "other"."""
        if self._admitted(session, "other", ref):
            self.error(session, code, message, ref)

    def _admitted(self, session: Session, kind: str, ref: str | None) -> bool:
        """Take a token of the frame's kind; without one, answer RATE_LIMITED, or close the
        session with 1008 once it has ignored many such answers."""
        limits = self._connection_limits.get(session)
        if limits is None:
            limits = self._connection_limits[session] = self._frame_limits.open(session.user_id)
        wait = self._frame_limits.admit(limits, kind)
        if not wait:
            return True
        if session.closing:
            pass  # frames read after the close are not answered
        elif limits.refused(trio.current_time()):
            self._frame_limits.closed.inc()
            session.close(CLOSE_POLICY_VIOLATION, "rate limit exceeded")
        else:
            self._errors.inc(1, "RATE_LIMITED")
            message = f"too many {kind} frames: retry after {retry_after_ms(wait)} ms"
            session.send(ErrorFrame("RATE_LIMITED", message, ref, retry_after_ms(wait)))
        return False

    def admit(self, session: Session, frame: ClientFrame) -> bool:
        """Whether the frame is within its rate limits; if not, it has been answered (the
        listener asks before `handle`)."""
        return self._admitted(session, LIMIT_KIND[type(frame)], frame.ref)

    async def handle(self, session: Session, frame: ClientFrame) -> None:
        """Act on one frame of the session's reader; a SEND is answered when its delivery
        settles, so the reader goes on with the next frame."""
        if isinstance(frame, Send):
            await self._send(session, frame)
        elif isinstance(frame, Subscribe):
            await self._subscribe(session, frame)
        elif isinstance(frame, Unsubscribe):
            self._unsubscribe(session, frame)
        elif isinstance(frame, Ping):
            session.send(PongFrame(frame.ref))
        elif isinstance(frame, Read):
            await self._signals.read(session, frame)
        elif isinstance(frame, Typing):
            self._signals.typing(session, frame)

    def disconnected(self, session: Session) -> None:
        limits = self._connection_limits.pop(session, None)
        if limits is not None:
            self._frame_limits.close(limits)
        self._signals.forget(session)
        self._send_slots.pop(session, None)
        for room_id in self._sessions.remove(session):
            self._presence.left(session, room_id)

    # SUBSCRIBE / UNSUBSCRIBE -----------------------------------------------------------------

    async def _subscribe(self, session: Session, frame: Subscribe) -> None:
        if frame.destination == ROOMS_DESTINATION:
            self._sessions.watch_rooms(session, True)
            session.send(SubscribedFrame(frame.ref, frame.destination, None))
            return
        room_id = room_id_of(frame.destination)
        if room_id is None:
            return self.error(session, "BAD_DESTINATION", f"unknown destination {frame.destination[:80]!r}", frame.ref)
        cap = self._settings.max_rooms_per_session
        if room_id not in session.rooms and len(session.rooms) >= cap:
            return self.error(
                session, "TOO_MANY_ROOMS", f"subscribed to {cap} rooms already: unsubscribe one first", frame.ref
            )
        try:
            room = await self._rooms.find(room_id)
        except (DatabaseUnavailable, CacheUnavailable):
            return self.error(session, "UNAVAILABLE", "room directory unavailable, retry", frame.ref)
        if room is None:
            return self.error(session, "NO_SUCH_ROOM", f"room {room_id} does not exist", frame.ref)
        try:
            last_seq = await self._enter_live(session, room_id, frame.since)
        except (DatabaseUnavailable, CacheUnavailable):
            return self.error(session, "UNAVAILABLE", "history unavailable for resume, retry", frame.ref)
        except HistoryNotStored:
            return self.error(session, "UNAVAILABLE", "history not stored yet for resume, retry", frame.ref)
        except ReplayTooLong:
            return self.error(
                session,
                "REPLAY_TOO_LONG",
                f"more than {REPLAY_LIMIT} messages after since={frame.since}: load them with "
                f"GET /api/room/{room_id}/messages, then subscribe with since = the newest seq held",
                frame.ref,
            )
        session.send(SubscribedFrame(frame.ref, frame.destination, last_seq))

    async def _enter_live(self, session: Session, room_id: int, since: int | None) -> int | None:
        """Queue the backlog after `since`, then make the session live, with nothing missed between.

        The node's room log and the registry change only in synchronous code, so taking the log's
        tail and registering the session happen with no message slipping between them. Older
        messages than the log holds come from the store first. `lastSeq` counts what was sent,
        never the client's `since` itself.
        """
        first_entry = room_id not in session.rooms
        if since is not None:
            await self._check_replay_limit(room_id, since)
        self._sessions.leave(session, room_id)
        try:
            sent_up_to = await self._queue_backlog(session, room_id, since) if since is not None else None
        except Exception:
            if not first_entry:
                # The session is out of the room until it subscribes again: presence must agree,
                # or the user would stay listed until the heartbeat expires.
                self._presence.left(session, room_id)
            raise
        self._sessions.enter(session, room_id)
        if first_entry:
            self._presence.entered(session, room_id)
        last = self._room_log.last_seq(room_id)
        if last is None:
            # Storage can be ahead of this node's fan-out; what the fan-out has not passed yet
            # still comes live, so lastSeq must not claim it.
            stored = await self._newest_stored_seq(room_id)
            passed = self._room_log.passed(room_id)
            last = stored if stored is None or passed is None else min(stored, passed)
        candidates = [s for s in (last, sent_up_to) if s is not None]
        return max(candidates) if candidates else None

    async def _check_replay_limit(self, room_id: int, since: int) -> None:
        """Raise ReplayTooLong when more than REPLAY_LIMIT stored messages follow `since`. The
        room log holds fewer than that, so a resume it covers needs no count."""
        if self._room_log.covers(room_id, since):
            return
        try:
            stored = await self._db.count_messages_after(room_id, since, REPLAY_LIMIT + 1)
        except DatabaseUnavailable:
            return  # the Redis cache holds fewer than the limit; beyond it the replay needs the database
        if stored > REPLAY_LIMIT:
            raise ReplayTooLong(room_id)

    async def _queue_backlog(self, session: Session, room_id: int, since: int) -> int | None:
        """Queue the messages after `since` up to the room log's tail; returns the newest seq
        queued, None when there was none. Whenever half the send buffer is used it waits for the
        client to read, then goes on from where it stopped, so no replay overflows the buffer;
        it returns right after queueing the log's tail, with no await in between."""
        position, sent_up_to = since, None
        while True:
            if not self._room_log.covers(room_id, position):
                replayed_to = await self._replay_up_to_log(session, room_id, position)
                if replayed_to > position:
                    position = sent_up_to = replayed_to
            for seq, frame in self._room_log.after(room_id, position):
                session.push(frame)
                position = sent_up_to = seq
                if session.must_drain:
                    break
            else:
                return sent_up_to
            await session.drained()
            if session.closing:
                return sent_up_to

    async def _replay_up_to_log(self, session: Session, room_id: int, since: int) -> int:
        """Replay stored messages until storage reaches the room log, so that nothing falls
        between the two; returns the last seq sent. Storage is a prefix of each room's messages
        (the persistence group stores a partition in order), so once it holds the newest message
        the log dropped, everything before the log is stored. The check and the caller's reading
        of the log happen with no await in between.

        A node that started after messages it never read (its fan-out starts at the end) has
        dropped nothing of them: for those, storage must have stored the room's partition up to
        where the fan-out started, checked before the replay that relies on it. So must it up to
        the room log's floor, when the log no longer remembers what this room dropped."""
        give_up_at = None
        while True:
            start = self._room_log.partition_start(room_id)
            never_read = start is not None and since + 1 < start[1]  # some of the room predates the fan-out
            stored_to_start = start is None or not never_read or await self._stored_to(start)
            floor = self._room_log.dropped_floor(room_id)
            stored_to_floor = floor is None or await self._stored_to(floor)
            since = await self._replay_stored(session, room_id, since, from_database=never_read or floor is not None)
            needed = self._room_log.dropped(room_id)
            if session.closing or (stored_to_start and stored_to_floor and (needed is None or since >= needed)):
                return since
            if give_up_at is None:
                give_up_at = trio.current_time() + RESUME_CATCH_UP_TIMEOUT
            elif trio.current_time() >= give_up_at:
                raise HistoryNotStored(room_id)
            await trio.sleep(RESUME_CATCH_UP_POLL)

    async def _stored_to(self, partition_offset: tuple[int, int], trust_unknown: bool = True) -> bool:
        """True when storage has stored the partition up to the offset. A partition with no
        stored offset yet (nothing stored since the table exists) counts as stored when
        `trust_unknown`; nothing precedes offset 0."""
        partition, offset = partition_offset
        if offset <= 0:
            return True
        stored = await self._db.stored_offset(self._settings.messages_topic, partition)
        return trust_unknown if stored is None else stored >= offset

    async def _replay_stored(self, session: Session, room_id: int, since: int, from_database: bool = False) -> int:
        """Send stored messages after `since` page by page until a page comes back empty (a page
        is cut by count or by bytes); returns the last seq sent. The Redis cache is written after
        PostgreSQL, so a replay that must see everything stored by now reads PostgreSQL
        (`from_database`)."""
        cursor = since
        while True:
            page = await self._stored_after(room_id, cursor, from_database)
            for message in page:
                session.push(text_frame(encode_frame(RoomMessageFrame(message))))
                cursor = message.seq
                if session.must_drain:  # a page of long messages is larger than the buffer
                    await session.drained()
            if not page or session.closing:
                return cursor

    async def _stored_after(self, room_id: int, since: int, from_database: bool) -> list[Message]:
        if from_database:
            return await self._db.messages_after(room_id, since, RESUME_PAGE, RESUME_PAGE_TEXT_BYTES)
        try:
            oldest, cached = await self._cache.recent_messages(room_id, since)
            if oldest is not None and oldest <= since:
                return _within_text_bytes(cached[:RESUME_PAGE], RESUME_PAGE_TEXT_BYTES)
        except CacheUnavailable:
            pass
        return await self._db.messages_after(room_id, since, RESUME_PAGE, RESUME_PAGE_TEXT_BYTES)

    async def _newest_stored_seq(self, room_id: int) -> int | None:
        """The newest stored seq of a room the room log holds nothing of. A room the fan-out has
        read nothing of is asked of the database once storage holds its partition up to where the
        fan-out started, and remembered: a burst of sessions entering quiet rooms asks storage
        once per room, not once per session."""
        known, last = self._room_log.quiet_last_seq(room_id)
        if known:
            return last
        quiet_from = self._room_log.quiet_start(room_id)
        try:
            if quiet_from is None or not await self._stored_before_start(*quiet_from):
                return await self._stored_last_seq(room_id)
            last = await self._db.last_seq(room_id)
        except DatabaseUnavailable:
            return await self._cached_last_seq(room_id)  # a failed database is not asked again
        self._room_log.remember_quiet(room_id, last)
        return last

    async def _stored_before_start(self, partition: int, start: int) -> bool:
        """Whether storage holds every record of the partition before the fan-out's start
        (remembered once true: storage only moves on)."""
        if partition in self._partitions_stored_to_start:
            return True
        stored = await self._stored_to((partition, start), trust_unknown=False)
        if stored:
            self._partitions_stored_to_start.add(partition)
        return stored

    async def _stored_last_seq(self, room_id: int) -> int | None:
        cached = await self._cached_last_seq(room_id)
        if cached is not None:
            return cached
        try:
            return await self._db.last_seq(room_id)
        except DatabaseUnavailable:
            return None

    async def _cached_last_seq(self, room_id: int) -> int | None:
        try:
            return await self._cache.last_seq(room_id)
        except CacheUnavailable:
            return None

    def _unsubscribe(self, session: Session, frame: Unsubscribe) -> None:
        if frame.destination == ROOMS_DESTINATION:
            self._sessions.watch_rooms(session, False)
        else:
            room_id = room_id_of(frame.destination)
            if room_id is None or room_id not in session.rooms:
                return self.error(session, "NOT_SUBSCRIBED", f"not subscribed to {frame.destination[:80]!r}", frame.ref)
            self._sessions.leave(session, room_id)
            self._presence.left(session, room_id)
        session.send(UnsubscribedFrame(frame.ref, frame.destination))

    # SEND ---------------------------------------------------------------------------------

    async def _send(self, session: Session, frame: Send) -> None:
        """Validate, deduplicate and hand the record to Kafka here, in the order of the frames;
        the answer comes when the delivery settles, at most MAX_SENDS_IN_FLIGHT at once."""
        if frame.room_id not in session.rooms:
            return self.error(session, "NOT_SUBSCRIBED", f"enter room {frame.room_id} before sending to it", frame.ref)
        try:
            text = check_message_text(frame.text)
            check_client_msg_id(frame.client_msg_id)
        except InvalidInput as exc:
            return self.error(session, "BAD_TEXT", str(exc), frame.ref)
        slots = self._send_slots.setdefault(session, trio.Semaphore(MAX_SENDS_IN_FLIGHT))
        await slots.acquire()
        # From the dedupe checks to the hand-over nothing awaits: a retry sees its original.
        msg_id = message_id(session.user_id, frame.room_id, frame.client_msg_id)
        seq = self._recent_acks.get(msg_id)
        if seq is None:
            seq = self._room_log.seen(msg_id)
        if seq is not None:  # a retried send: the id includes the room, so this is the same room
            slots.release()
            session.send(AckFrame(frame.ref, frame.client_msg_id, msg_id, frame.room_id, seq))
            return
        pending = self._in_flight.get(msg_id)
        if pending is not None:
            pending.when_settled(partial(self._answer_send, session, frame, msg_id, slots, None))
            return
        record = ChatRecord(msg_id, frame.room_id, session.user_id, "chat", text, frame.client_msg_id)
        try:
            pending = self._producer.enqueue(record)
        except KafkaUnavailable as exc:
            slots.release()
            return self._send_failed(session, frame, exc)
        if frame.client_msg_id is not None:
            self._in_flight[msg_id] = pending
        pending.when_settled(partial(self._answer_send, session, frame, msg_id, slots, trio.current_time()))

    def _answer_send(
        self,
        session: Session,
        frame: Send,
        msg_id: str,
        slots: trio.Semaphore,
        handed_over_at: float | None,
        pending: PendingSend,
    ) -> None:
        """Answer ACK or ERROR for a settled delivery and free the slot. The SEND that handed the
        record over (`handed_over_at` set) owns its in-flight entry and counts it; a retry that
        joined it only answers."""
        slots.release()
        if handed_over_at is not None and self._in_flight.get(msg_id) is pending:
            del self._in_flight[msg_id]
        try:
            produced = pending.produced()
        except KafkaUnavailable as exc:
            return self._send_failed(session, frame, exc)
        if handed_over_at is not None:
            self._produce_latency.observe((trio.current_time() - handed_over_at) * 1000)
            self._received.inc()
        if frame.client_msg_id is not None:
            self._recent_acks[msg_id] = produced.offset
            if len(self._recent_acks) > RECENT_ACKS:
                self._recent_acks.popitem(last=False)
        session.send(AckFrame(frame.ref, frame.client_msg_id, msg_id, frame.room_id, produced.offset))

    def _send_failed(self, session: Session, frame: Send, exc: KafkaUnavailable) -> None:
        log.warning("send failed: %s", exc)
        self.error(session, "UNAVAILABLE", "message not accepted (broker unavailable), retry", frame.ref)


def _within_text_bytes(messages: list[Message], limit: int) -> list[Message]:
    """The longest prefix whose texts fit in `limit` UTF-8 bytes; the first message always."""
    total = 0
    for count, message in enumerate(messages):
        total += len(message.text.encode())
        if total > limit and count:
            return messages[:count]
    return messages
