"""One simulated user: log in, connect, enter its room, chat at its rate, leave.

It behaves as docs/protocol.md asks of a well-behaved client: on a dropped connection it
reconnects with backoff (to the next node when there are several), re-enters its room with
`since` = the highest seq it holds, and re-sends its unacknowledged messages with the same
clientMsgId.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import jwt
import msgspec
import trio

from chattrio.bot import frames
from chattrio.bot.config import Node
from chattrio.bot.http import HttpError
from chattrio.bot.sendclock import FinishWrite
from chattrio.bot.stats import RoomMessageSeen, SentMessage
from chattrio.bot.ws import UnfinishedWrite, WsConnection, WsError

if TYPE_CHECKING:
    from chattrio.bot.runner import WorkerContext

CONNECT_TIMEOUT = 10.0
SUBSCRIBE_TIMEOUT = 15.0
RECONNECT_BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0)
UNAVAILABLE_RETRY_SECONDS = 1.0
# After ERROR REPLAY_TOO_LONG what the user misses comes over REST, this many messages a request.
HISTORY_PAGE = 100
LOGIN_RETRY_BACKOFF = (0.5, 1.0, 2.0, 0.0)  # sleeps after a 503; the last attempt does not sleep
TOKEN_TTL_SECONDS = 24 * 3600

# What "the connection is gone" looks like from trio and the frame layer.
CONNECTION_ERRORS = (WsError, trio.BrokenResourceError, trio.ClosedResourceError, OSError, trio.TooSlowError)

_decode = frames.server_decoder.decode
_encode = frames.client_encoder.encode


class LoginFailed(Exception):
    pass


def signed_token(user_id: str, secret: str) -> str:
    """An HS256 token for `user_id`, as an identity service (or Centrifugo's backend) issues it."""
    return jwt.encode({"sub": user_id, "exp": int(time.time()) + TOKEN_TTL_SECONDS}, secret, algorithm="HS256")


@dataclass(slots=True)
class RoomTrack:
    """What one user saw of its room, across its connections."""

    seen: set[int] = field(default_factory=set)
    highest: int = -1
    first_last_seq: int | None = None
    entered: bool = False


class SimUser:
    def __init__(self, ctx: WorkerContext, index: int, room_id: int, nodes: list[Node]) -> None:
        self.ctx = ctx
        self.index = index
        self.user_id = f"{ctx.config.user_id_prefix}{index}"
        self.room_id = room_id
        self.topic = frames.room_topic(room_id)
        self.nodes = nodes  # home node first: the order of failover
        self.node_turn = 0
        self.token = ""
        self.conn: WsConnection | None = None
        self.pending: dict[str, bytes] = {}  # clientMsgId -> encoded SEND, until ACKed
        # clientMsgId -> when its SEND was last written (trio clock), until an answer or the loss
        # of the connection: how long the server left a SEND unanswered.
        self.written_at: dict[str, float] = {}
        self.rooms_announced: set[int] = set()
        self.track = RoomTrack()
        self.awaiting_subscribed = False
        self.subscribe_unavailable = False  # the room's SUBSCRIBE was answered UNAVAILABLE: retry
        self.replay_too_long = False  # ... answered REPLAY_TOO_LONG: catch up over REST, then retry
        self.last_received = 0.0  # trio clock
        self.messages_sent = 0  # numbers the clientMsgIds
        self.done = False  # failed to join, skipped, or left: nothing more to settle
        self._nursery: trio.Nursery | None = None
        self._stay: trio.CancelScope | None = None  # the receiving until the user leaves

    # -- life cycle ---------------------------------------------------------------------------

    async def run(self, start_at: float) -> None:
        ctx = self.ctx
        await trio.sleep_until(start_at)
        if ctx.stop_opening:
            ctx.ledger.inc("usersSkipped")
            self.done = True
            return
        try:
            # A user still queueing for a slow server when the others leave has failed.
            with trio.fail_at(ctx.leave_at):
                await self._login()
                await self._open_session()
        except (LoginFailed, HttpError, *CONNECTION_ERRORS) as exc:
            ctx.user_failed(exc)
            self.done = True
            return
        ctx.user_connected(self.nodes[0])
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._keepalive)
            if ctx.config.typing_per_second > 0:
                nursery.start_soon(self._type)
            with ctx.send_clock.schedule(self):
                await self._receive_until(ctx.leave_at)
            nursery.cancel_scope.cancel()
        self.done = True
        await self._leave()

    async def _login(self) -> None:
        if self.ctx.config.token_secret:
            self.token = signed_token(self.user_id, self.ctx.config.token_secret)
            return
        pool = self.ctx.http_pool(self.nodes[0])
        for attempt, backoff in enumerate(LOGIN_RETRY_BACKOFF):
            response = await pool.request("POST", f"/api/user/enter/{self.user_id}")
            # 503 = a dependency is down or slow for now: the protocol says retry.
            if response.status != 503 or attempt == len(LOGIN_RETRY_BACKOFF) - 1:
                break
            self.ctx.ledger.inc("loginRetries")
            await trio.sleep(backoff * (0.5 + random.random()))
        if response.status not in (200, 201):
            raise LoginFailed(f"enter {self.user_id}: HTTP {response.status} {response.body[:200]!r}")
        try:
            self.token = msgspec.json.decode(response.body)["data"]["token"]
        except (msgspec.DecodeError, KeyError, TypeError) as exc:
            raise LoginFailed(f"enter {self.user_id}: unexpected answer {response.body[:200]!r}") from exc

    async def _open_session(self) -> None:
        """Connect to the current node, enter the room (resuming after what we hold), and
        re-send what is unacknowledged. Only returns once the room subscription is live."""
        node = self.nodes[self.node_turn % len(self.nodes)]
        source = self.ctx.config.source_address(self.index)
        target = f"{node.ws_path}?batch=1" if self.ctx.config.batch_frames else node.ws_path
        conn = await WsConnection.connect(node.ws_host, node.ws_port, target, CONNECT_TIMEOUT, self.token, source)
        try:
            await conn.send_text(_encode(frames.Subscribe(frames.ROOMS_TOPIC, ref="rooms")))
            await conn.send_text(self._room_subscribe())
            self.awaiting_subscribed = True
            with trio.fail_after(SUBSCRIBE_TIMEOUT):
                while self.awaiting_subscribed:
                    if self.subscribe_unavailable:
                        # The node cannot replay what we miss yet (storage catching up, or down):
                        # docs/protocol.md says ask again, from what we hold by now.
                        self.subscribe_unavailable = False
                        self.ctx.ledger.inc("subscribeRetries")
                        await trio.sleep(UNAVAILABLE_RETRY_SECONDS)
                        await conn.send_text(self._room_subscribe())
                    if self.replay_too_long:
                        # Too far behind for a resume: docs/protocol.md says load the gap over REST.
                        self.replay_too_long = False
                        self.ctx.ledger.inc("restCatchUps")
                        await self._catch_up_over_rest(node)
                        await conn.send_text(self._room_subscribe())
                    payloads = await conn.receive()
                    self.dispatch_all(payloads)
            # From here new sends go straight to `conn`; the snapshot holds the earlier ones.
            self.conn = conn
            unacked = list(self.pending.items())
            for cmid, payload in unacked:
                self.written_at[cmid] = trio.current_time()
                await conn.send_text(payload)
            self.ctx.ledger.inc("resent", len(unacked))
        except BaseException:
            self.conn = None
            await conn.aclose_now()
            raise
        self.last_received = trio.current_time()

    def _room_subscribe(self) -> bytes:
        """SUBSCRIBE to our room, resuming after the highest seq held once we have entered it."""
        return _encode(frames.Subscribe(self.topic, since=self._resume_since(), ref="room"))

    def _resume_since(self) -> int | None:
        if not self.track.entered:
            return None
        since = self.track.highest if self.track.highest >= 0 else self.track.first_last_seq
        return -1 if since is None else since  # -1: the room was empty when we entered

    async def _catch_up_over_rest(self, node: Node) -> None:
        """Fetch every message after our resume point, newest page first, then account for them
        oldest first as a replay would have delivered them."""
        since = self._resume_since()
        assert since is not None
        missed: list[frames.ChatMessage] = []
        before = None
        while True:
            page = await self._history_page(node, before)  # newest first
            missed += [m for m in page if m.seq > since]
            if len(page) < HISTORY_PAGE or page[-1].seq <= since:
                break
            before = page[-1].seq
        self.dispatch_all([_encode(frames.RoomMessage(m)) for m in reversed(missed)])

    async def _history_page(self, node: Node, before: int | None) -> list[frames.ChatMessage]:
        query = f"limit={HISTORY_PAGE}" + ("" if before is None else f"&before={before}")
        try:
            response = await self.ctx.http_pool(node).request("GET", f"/api/room/{self.room_id}/messages?{query}")
        except HttpError as exc:
            raise WsError(f"history for a catch-up: {exc}") from exc
        if response.status != 200:
            raise WsError(f"history for a catch-up: HTTP {response.status}")
        try:
            return msgspec.convert(msgspec.json.decode(response.body)["data"], list[frames.ChatMessage])
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError, TypeError) as exc:
            raise WsError(f"history for a catch-up: unexpected answer {response.body[:200]!r}") from exc

    async def _receive_until(self, deadline: float) -> None:
        with trio.move_on_at(deadline) as self._stay:
            while True:
                assert self.conn is not None
                try:
                    await self._read(self.conn)
                except CONNECTION_ERRORS as exc:
                    await self._reconnect(exc)

    def leave_now(self) -> None:
        """The run has settled (chattrio/bot/settle.py): leave without waiting out the grace."""
        if self._stay is not None:
            self._stay.deadline = -math.inf

    def unsettled(self) -> bool:
        """Still joining, reconnecting, or with a SEND unanswered."""
        return not self.done and (self.conn is None or bool(self.pending))

    def highest_held(self) -> int | None:
        """The seq up to which this user holds its room: what came, and what its subscription
        did not promise (up to the first SUBSCRIBED's lastSeq). None before it entered."""
        if not self.track.entered:
            return None
        first = self.track.first_last_seq
        return max(self.track.highest, -1 if first is None else first)

    async def _read(self, conn: WsConnection) -> None:
        receiver = self.ctx.receiver
        while True:
            # The worker's receiver reads and accounts for plain messages; it returns here when
            # there is a ping to answer, a close frame, the end of the stream or an error.
            await receiver.watch(conn, self)
            payloads = await conn.receive()
            self.last_received = trio.current_time()
            self.dispatch_all(payloads)

    async def _keepalive(self) -> None:
        """PING a connection that has been silent for `keepaliveSeconds` and close it when that
        gets no answer within as long again (closing wakes this user's task, which reconnects):
        a hung node is left at most twice that after its last frame. One timer per user rather
        than a timeout around every receive keeps the receive path cheap. The node's
        own pings (any bytes) count as an answer: with a keepalive longer than the node's ping
        interval, only the node pings.

        A stall of this process (a busy machine) is not the node's silence: the PING is given
        its whole keepalive from when it was actually sent, and bytes that arrived but are not
        read yet count as an answer (after a stall the keepalive may run before the receiver)."""
        keepalive = self.ctx.config.keepalive_seconds
        while True:
            await trio.sleep_until(max(self.last_received + keepalive, trio.current_time() + keepalive / 4))
            conn = self.conn
            if conn is None or trio.current_time() - self.last_received < keepalive:
                continue
            self._send_soon(_encode(frames.Ping(ref="keepalive")))
            await trio.sleep_until(max(self.last_received + 2 * keepalive, trio.current_time() + keepalive))
            if (
                self.conn is conn
                and trio.current_time() - self.last_received >= 2 * keepalive
                and not conn.has_unread_bytes()
            ):
                self.ctx.ledger.inc("keepaliveTimeouts")
                await conn.aclose_now()

    async def _type(self) -> None:
        """TYPING frames at the configured rate, each interval jittered so users do not type in step."""
        typing = _encode(frames.Typing(self.room_id))
        interval = 1 / self.ctx.config.typing_per_second
        while True:
            await trio.sleep(interval * (0.5 + random.random()))
            if self.conn is not None:
                self._send_soon(typing)
                self.ctx.ledger.inc("typingSent")

    async def _reconnect(self, cause: BaseException) -> None:
        ctx = self.ctx
        lost_at = trio.current_time()
        if self.conn is not None:
            conn, self.conn = self.conn, None  # first, so that the send clock stops using it
            await conn.aclose_now()
        self._give_up_answers()
        ctx.ledger.inc("disconnects")
        ctx.note("disconnect", cause)
        attempt = 0
        while True:
            await trio.sleep(RECONNECT_BACKOFF[min(attempt, len(RECONNECT_BACKOFF) - 1)] * (0.5 + random.random()))
            self.node_turn += 1
            attempt += 1
            try:
                await self._open_session()
                break
            except CONNECTION_ERRORS as exc:
                ctx.note("reconnect attempt", exc)
        ctx.ledger.inc("reconnects")
        ctx.ledger.reconnect.record(int((trio.current_time() - lost_at) * 1e6))

    def _answered(self, cmid: str) -> None:
        written = self.written_at.pop(cmid, None)
        if written is not None:
            self.ctx.ledger.answer_wait.record(int((trio.current_time() - written) * 1e6))

    def _give_up_answers(self) -> None:
        """The connection is gone (or the user leaves): the SENDs written on it waited this long,
        unanswered, and are written again on the next one."""
        for cmid in list(self.written_at):
            self._answered(cmid)

    async def _leave(self) -> None:
        self.ctx.live -= 1
        self._give_up_answers()
        conn = self.conn
        if conn is None:
            self.ctx.ledger.inc("usersNotResumed")
            return
        self.conn = None
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                await conn.send_text(_encode(frames.Unsubscribe(self.topic, ref="leave")))
        except CONNECTION_ERRORS:
            pass
        await conn.close()

    # -- sending ------------------------------------------------------------------------------

    def send_next(self) -> FinishWrite | None:
        """The send clock's call at this user's turn: a new message, pending until ACKed, written
        now when the connection takes it. Otherwise returns what finishes the write; the clock
        waits for it before this user's next turn, so one connection never has two writes at once."""
        unfinished = self._write(self.new_message())
        return None if unfinished is None else partial(self._finish, unfinished)

    def new_message(self) -> bytes:
        """The next SEND, recorded as sent and pending."""
        ctx = self.ctx
        now = time.time()
        # The send time rides in the clientMsgId so that any worker can compute latency.
        cmid = f"{ctx.run_prefix}{self.index}.{self.messages_sent}.{int(now * 1e6)}"
        self.messages_sent += 1
        payload = _encode(frames.Send(self.room_id, ctx.text, cmid, cmid))
        self.pending[cmid] = payload
        if self.conn is not None:
            self.written_at[cmid] = trio.current_time()
        ctx.ledger.sent[cmid] = SentMessage(self.room_id, now)
        ctx.ledger.timeline.add("sent", now)
        return payload

    def _write(self, payload: bytes) -> UnfinishedWrite | None:
        conn = self.conn
        if conn is None:
            return None  # re-sent by _open_session once connected again
        try:
            return conn.send_text_nowait(payload)
        except CONNECTION_ERRORS:
            return None  # the receiver hands the broken connection back; pending survives

    async def _finish(self, unfinished: UnfinishedWrite) -> None:
        # No timeout: giving up halfway through a frame would garble every frame after it. A dead
        # connection is closed by the keepalive or the reconnect, which ends this write.
        try:
            await unfinished.finish()
        except CONNECTION_ERRORS:
            pass

    def _send_soon(self, payload: bytes) -> None:
        """Write now if possible, else finish in the background: the caller never waits."""
        unfinished = self._write(payload)
        if unfinished is not None:
            assert self._nursery is not None
            self._nursery.start_soon(self._finish, unfinished)

    async def _retry_later(self, cmid: str) -> None:
        await trio.sleep(UNAVAILABLE_RETRY_SECONDS)
        payload = self.pending.get(cmid)
        if payload is not None:
            self.ctx.ledger.inc("resent")
            if self.conn is not None:
                self.written_at[cmid] = trio.current_time()
            self._send_soon(payload)

    # -- receiving (the hot path) -------------------------------------------------------------

    def dispatch_all(self, payloads: list[bytes]) -> None:
        """Account for a batch of server frames. This is the bot's hot path (hundreds of
        thousands of frames per second): ROOM_MESSAGE is handled inline with local variables,
        and latencies are recorded once per batch (one receive = one instant).

        A node sends the same bytes to every member of a room, so a worker decodes each
        distinct ROOM_MESSAGE once (`WorkerContext.room_messages`); every user still accounts
        for its own copy."""
        if not payloads:
            return
        now = time.time()
        now_us = int(now * 1e6)
        ctx = self.ctx
        known = ctx.room_messages
        track = self.track
        seen_seqs = track.seen
        highest = track.highest
        # Before the first SUBSCRIBED anything goes (live frames may overtake it).
        floor = track.first_last_seq if track.first_last_seq is not None else -1
        room_id = self.room_id
        latencies: list[int] = []
        duplicates = out_of_order = 0
        for payload in payloads:
            entry = known.get(payload)
            if entry is None:
                entry = self._first_sight(payload, now)
                if entry is None:
                    if track.first_last_seq is not None:
                        floor = track.first_last_seq  # it may have been our SUBSCRIBED
                    continue
            for message in entry if isinstance(entry, tuple) else (entry,):  # a MESSAGES frame: several
                if message.room_id != room_id:
                    ctx.protocol_violation(f"{self.user_id} got a message of room {message.room_id}, not entered")
                    continue
                seq = message.seq
                if seq in seen_seqs:
                    duplicates += 1
                    continue
                seen_seqs.add(seq)
                if seq <= floor:
                    # Covered by neither our subscription (lastSeq) nor a `since` replay.
                    ctx.protocol_violation(
                        f"{self.user_id} got {message.kind} seq {seq} live after SUBSCRIBED lastSeq={floor} (no since)"
                    )
                if seq < highest:
                    out_of_order += 1
                else:
                    highest = seq
                seen = message.seen
                if seen is None:
                    continue  # join/leave, or a message from outside this run
                if seen.seq != seq:
                    duplicates += 1  # the same clientMsgId stored twice
                    continue
                seen.receivers += 1
                assert message.sent_us is not None  # set together with `seen`
                latencies.append(now_us - message.sent_us)
        track.highest = highest
        counters = ctx.ledger.counters
        if duplicates:
            counters["duplicates"] += duplicates
        if out_of_order:
            counters["outOfOrder"] += out_of_order
        if latencies:
            counters["delivered"] += len(latencies)
            ctx.ledger.timeline.record_deliveries(now, latencies)

    def _first_sight(self, payload: bytes, now: float) -> RoomMessageSeen | tuple[RoomMessageSeen, ...] | None:
        """Decode a frame this worker has not seen yet. A ROOM_MESSAGE or MESSAGES frame is
        returned (and remembered for the other users); anything else is handled here and gives
        None."""
        ctx = self.ctx
        try:
            frame = _decode(payload)
        except msgspec.DecodeError as exc:
            ctx.protocol_violation(f"undecodable server frame ({exc}): {payload[:300]!r}")
            return None
        if type(frame) is frames.RoomMessage:
            return ctx.remember_room_message(payload, frame.message)
        if type(frame) is frames.Messages:
            return ctx.remember_messages(payload, frame.messages)
        if type(frame) is frames.Ack:
            self._on_ack(frame, now)
        elif type(frame) is frames.Subscribed:
            self._on_subscribed(frame)
        elif type(frame) is frames.Error:
            self._on_error(frame)
        elif type(frame) is frames.RoomCreated:
            self._on_room_created(frame)
        elif type(frame) is frames.TypingNotice:
            ctx.ledger.inc("typingReceived")
        # session-info, UNSUBSCRIBED and PONG need nothing
        return None

    def _on_ack(self, ack: frames.Ack, now: float) -> None:
        cmid = ack.clientMsgId
        if cmid is None or self.pending.pop(cmid, None) is None:
            return  # the second ACK of a message re-sent before its first ACK came
        self._answered(cmid)
        ledger = self.ctx.ledger
        # (Centrifugo's publish replies carry no seq: nothing to settle on, see BotConfig.until_settled)
        if ack.seq is not None and ack.seq > self.ctx.acked_highest.get(self.room_id, -1):
            self.ctx.acked_highest[self.room_id] = ack.seq
        sent = ledger.sent[cmid]
        sent.acked = True
        sent.ack_seq = ack.seq
        sent.acked_at = now
        ledger.ack.record(int((now - sent.sent_at) * 1e6))
        ledger.timeline.add("acked", now)

    def _on_room_created(self, frame: frames.RoomCreated) -> None:
        """Counts, per room, the users it was announced to; a second announcement to the same
        user is a duplicate."""
        room_id = frame.room.get("id")
        if not isinstance(room_id, int):
            self.ctx.protocol_violation(f"ROOM_CREATED without an integer room id: {frame.room!r}"[:300])
            return
        if room_id in self.rooms_announced:
            self.ctx.ledger.inc("announcementDuplicates")
            return
        self.rooms_announced.add(room_id)
        self.ctx.ledger.inc(f"announced:{room_id}")

    def _on_subscribed(self, frame: frames.Subscribed) -> None:
        if frame.destination != self.topic:
            return
        self.awaiting_subscribed = False
        if not self.track.entered:
            self.track.entered = True
            self.track.first_last_seq = frame.lastSeq
            self.ctx.ledger.members.setdefault(self.room_id, []).append(
                frame.lastSeq if frame.lastSeq is not None else -1
            )

    def _on_error(self, frame: frames.Error) -> None:
        ctx = self.ctx
        ctx.ledger.inc(f"error.{frame.code}")
        ref = frame.ref
        if ref is not None and ref in self.pending:
            self._answered(ref)
            if frame.code == "UNAVAILABLE" and self._nursery is not None:
                self._nursery.start_soon(self._retry_later, ref)
            else:
                del self.pending[ref]  # refused for good: counted under error.<code>
        elif ref == "room" and frame.code == "UNAVAILABLE" and self.awaiting_subscribed:
            self.subscribe_unavailable = True
        elif ref == "room" and frame.code == "REPLAY_TOO_LONG" and self.awaiting_subscribed:
            self.replay_too_long = True
        elif ref in ("room", "rooms"):
            raise WsError(f"subscription refused: {frame.code} {frame.message}")
