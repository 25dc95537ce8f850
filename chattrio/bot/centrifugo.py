"""A simulated user of Centrifugo (v6, JSON client protocol over WebSocket), so that the same bot
compares chattrio with it on the same machine (scripts/peers.sh, docs/benchmarks.md).

It is a SimUser with Centrifugo's wire: the user signs its own HS256 connection token (Centrifugo
has no sign-in endpoint; an application's backend would issue it), sends `connect` and
`subscribe` in one frame, publishes into its room's channel and counts the pushes. A room is the
channel `chat:<scenario>-<run>-<k>` with history on, so that every publication has an offset: the
offset plays the seq's part in the accounting (order, duplicates, who was subscribed before a
message). The subscription asks to be recoverable, and after a lost connection the user
resubscribes with `recover` from the highest offset it holds.

Commands and replies (one JSON object per line, several lines in a frame):
`{"id":1,"connect":{"token":..}}`, `{"id":2,"subscribe":{"channel":..}}`,
`{"id":N,"publish":{"channel":..,"data":{..}}}` answered `{"id":N,"publish":{}}`, pushes
`{"push":{"channel":..,"pub":{"data":..,"offset":..}}}`, and the server's ping `{}`, answered `{}`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec
import trio

from chattrio.bot import frames
from chattrio.bot.config import Node
from chattrio.bot.stats import RoomMessageSeen, SentMessage
from chattrio.bot.user import CONNECT_TIMEOUT, SUBSCRIBE_TIMEOUT, SimUser, signed_token
from chattrio.bot.ws import WsConnection, WsError

if TYPE_CHECKING:
    from chattrio.bot.runner import WorkerContext

CONNECT_ID = 1
SUBSCRIBE_ID = 2
UNSUBSCRIBE_ID = 3
FIRST_PUBLISH_ID = 10
CHANNEL_NAMESPACE = "chat"  # scripts/peers.sh configures this namespace (history, publishing)
PING = b"{}"


class MessageData(msgspec.Struct, gc=False):
    """What the bot publishes: the clientMsgId carries the send time, as with chattrio."""

    clientMsgId: str
    text: str


class Publication(msgspec.Struct, gc=False):
    data: MessageData | None = None
    offset: int = 0


class Push(msgspec.Struct, gc=False):
    channel: str = ""
    pub: Publication | None = None


class ReplyError(msgspec.Struct, gc=False):
    code: int
    message: str = ""


class SubscribeResult(msgspec.Struct, gc=False):
    offset: int = 0
    epoch: str = ""
    recovered: bool = False
    publications: list[Publication] = []


class Reply(msgspec.Struct, gc=False):
    """Any line from the server; the empty one is the server's ping."""

    id: int = 0
    error: ReplyError | None = None
    push: Push | None = None
    connect: dict | None = None
    subscribe: SubscribeResult | None = None
    publish: dict | None = None


_decode_reply = msgspec.json.Decoder(Reply).decode
_encode = msgspec.json.Encoder().encode


def channel_name(run_id: str, scenario: str, room_id: int) -> str:
    return f"{CHANNEL_NAMESPACE}:{scenario}-{run_id}-{room_id}"


class CentrifugoUser(SimUser):
    def __init__(self, ctx: WorkerContext, index: int, room_id: int, nodes: list[Node]) -> None:
        super().__init__(ctx, index, room_id, nodes)
        self.channel = channel_name(ctx.run_prefix.rstrip("."), ctx.config.scenario, room_id)
        self.epoch = ""
        self.next_id = FIRST_PUBLISH_ID
        self.publishing: dict[int, str] = {}  # command id -> clientMsgId, until the reply
        self.recovered: list[bytes] = []  # a resubscription's recovered publications, as pushes

    # -- signing in and entering the room ----------------------------------------------------------

    async def _login(self) -> None:
        secret = self.ctx.config.centrifugo_secret
        assert secret is not None
        self.token = signed_token(self.user_id, secret)

    async def _open_session(self) -> None:
        node = self.nodes[self.node_turn % len(self.nodes)]
        conn = await WsConnection.connect(node.ws_host, node.ws_port, node.ws_path, CONNECT_TIMEOUT)
        try:
            connect = {"id": CONNECT_ID, "connect": {"token": self.token, "name": "chattrio-bot"}}
            await conn.send_text(_encode(connect) + b"\n" + self._subscribe_command())
            self.awaiting_subscribed = True
            with trio.fail_after(SUBSCRIBE_TIMEOUT):
                while self.awaiting_subscribed:
                    self._dispatch_in_order(await conn.receive())
            self.conn = conn
            unacked = list(self.pending.values())
            for payload in unacked:
                await conn.send_text(payload)
            self.ctx.ledger.inc("resent", len(unacked))
        except BaseException:
            self.conn = None
            await conn.aclose_now()
            raise
        self.last_received = trio.current_time()

    def _subscribe_command(self) -> bytes:
        request: dict = {"channel": self.channel, "recoverable": True}
        if self.track.entered:  # a resubscription: what we missed comes with the reply
            request |= {"recover": True, "epoch": self.epoch, "offset": max(self.track.highest, 0)}
        return _encode({"id": SUBSCRIBE_ID, "subscribe": request})

    def _dispatch_in_order(self, payloads: list[bytes]) -> None:
        """While entering: line by line, so that the publications recovered with the subscribe
        reply are counted before any live push that follows it."""
        for payload in payloads:
            for line in payload.split(b"\n"):
                super().dispatch_all([line])
                if self.recovered:
                    recovered, self.recovered = self.recovered, []
                    super().dispatch_all(recovered)

    def _on_subscribe_reply(self, result: SubscribeResult) -> None:
        self.awaiting_subscribed = False
        self.epoch = result.epoch
        if not self.track.entered:
            self.track.entered = True
            self.track.first_last_seq = result.offset
            self.ctx.ledger.members.setdefault(self.room_id, []).append(result.offset)
            return
        if not result.recovered:
            self.ctx.ledger.inc("recoveryFailed")  # what was missed shows as loss
        self.recovered = [_encode({"push": {"channel": self.channel, "pub": pub}}) for pub in result.publications]

    # -- keeping the connection --------------------------------------------------------------------

    async def _keepalive(self) -> None:
        """Centrifugo pings every client (25 s by default): a connection silent for twice
        `keepaliveSeconds` is dead, and closing it makes the user reconnect."""
        keepalive = self.ctx.config.keepalive_seconds
        while True:
            await trio.sleep(keepalive)
            conn = self.conn
            if conn is not None and trio.current_time() - self.last_received >= 2 * keepalive:
                self.ctx.ledger.inc("keepaliveTimeouts")
                await conn.aclose_now()

    async def _leave(self) -> None:
        conn = self.conn
        if conn is not None:
            try:
                with trio.fail_after(CONNECT_TIMEOUT):
                    await conn.send_text(_encode({"id": UNSUBSCRIBE_ID, "unsubscribe": {"channel": self.channel}}))
            except (WsError, trio.BrokenResourceError, trio.ClosedResourceError, OSError, trio.TooSlowError):
                pass
        self.ctx.live -= 1
        if conn is None:
            self.ctx.ledger.inc("usersNotResumed")
            return
        self.conn = None
        await conn.close()

    # -- sending -----------------------------------------------------------------------------------

    def new_message(self) -> bytes:
        ctx = self.ctx
        now = time.time()
        cmid = f"{ctx.run_prefix}{self.index}.{self.messages_sent}.{int(now * 1e6)}"
        self.messages_sent += 1
        command_id = self.next_id
        self.next_id += 1
        data = MessageData(cmid, ctx.text)
        payload = _encode({"id": command_id, "publish": {"channel": self.channel, "data": data}})
        self.publishing[command_id] = cmid
        self.pending[cmid] = payload
        ctx.ledger.sent[cmid] = SentMessage(self.room_id, now)
        ctx.ledger.timeline.add("sent", now)
        return payload

    # -- receiving ---------------------------------------------------------------------------------

    def dispatch_all(self, payloads: list[bytes]) -> None:
        """Centrifugo writes several replies in one frame, a line each: the accounting is
        SimUser's, per line (a push's line is the same bytes for every subscriber)."""
        if len(payloads) == 1 and b"\n" not in payloads[0]:
            super().dispatch_all(payloads)
        else:
            super().dispatch_all([line for payload in payloads for line in payload.split(b"\n")])

    def _first_sight(self, payload: bytes, now: float) -> RoomMessageSeen | None:
        ctx = self.ctx
        try:
            reply = _decode_reply(payload)
        except msgspec.DecodeError as exc:
            ctx.protocol_violation(f"undecodable Centrifugo reply ({exc}): {payload[:300]!r}")
            return None
        push = reply.push
        if push is not None:
            if push.pub is None:
                return None  # join, leave, disconnect, ...: nothing to count
            return self._remember(payload, push.channel, push.pub)
        if reply.error is not None:
            self._on_reply_error(reply.id, reply.error)
        elif reply.publish is not None:
            self._on_publish_reply(reply.id, now)
        elif reply.subscribe is not None:
            self._on_subscribe_reply(reply.subscribe)
        elif reply.id == 0 and reply.connect is None:
            self._answer_ping()
        return None

    def _remember(self, payload: bytes, channel: str, pub: Publication) -> RoomMessageSeen:
        room_id = self.room_id if channel == self.channel else -1  # -1: counted as a violation
        cmid = pub.data.clientMsgId if pub.data is not None else None
        message = frames.ChatMessage("", room_id, pub.offset, "", "MESSAGE", "", cmid, 0)
        return self.ctx.remember_room_message(payload, message)

    def _answer_ping(self) -> None:
        if self._nursery is not None:
            self._send_soon(PING)

    def _on_publish_reply(self, command_id: int, now: float) -> None:
        cmid = self.publishing.pop(command_id, None)
        if cmid is not None:
            self._on_ack(frames.Ack(cmid, "", self.room_id, None), now)  # type: ignore[arg-type]

    def _on_reply_error(self, command_id: int, error: ReplyError) -> None:
        self.ctx.ledger.inc(f"error.{error.code}")
        cmid = self.publishing.pop(command_id, None)
        if cmid is not None:
            self.pending.pop(cmid, None)  # refused for good: counted under error.<code>
        elif command_id in (CONNECT_ID, SUBSCRIBE_ID):
            raise WsError(
                f"{'connect' if command_id == CONNECT_ID else 'subscribe'} refused: {error.code} {error.message}"
            )
