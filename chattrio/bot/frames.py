"""The bot's own, independent reading of docs/protocol.md (it does not import the server's
models, so a server that drifts from the contract shows up as a decode error here)."""

from __future__ import annotations

import msgspec


class ChatMessage(msgspec.Struct, gc=False):
    id: str
    roomId: int
    seq: int
    senderId: str
    kind: str
    text: str
    clientMsgId: str | None
    sentAt: int


class RoomMessage(msgspec.Struct, tag="ROOM_MESSAGE", gc=False):
    message: ChatMessage


class Messages(msgspec.Struct, tag="MESSAGES", gc=False):
    """Several live messages of one room, in order (a connection opened with /ws?batch=1)."""

    roomId: int
    messages: list[ChatMessage]


class Ack(msgspec.Struct, tag="ACK", gc=False):
    clientMsgId: str | None
    id: str
    roomId: int
    seq: int
    ref: str | None = None


class Subscribed(msgspec.Struct, tag="SUBSCRIBED", gc=False):
    destination: str
    lastSeq: int | None
    ref: str | None = None


class Unsubscribed(msgspec.Struct, tag="UNSUBSCRIBED", gc=False):
    destination: str
    ref: str | None = None


class Error(msgspec.Struct, tag="ERROR", gc=False):
    code: str
    message: str
    ref: str | None = None
    retryAfterMs: int | None = None  # RATE_LIMITED only


class SessionInfo(msgspec.Struct, tag="session-info", gc=False):
    sessionId: str
    userId: str
    nodeId: str


class RoomCreated(msgspec.Struct, tag="ROOM_CREATED", gc=False):
    room: dict


class Pong(msgspec.Struct, tag="PONG", gc=False):
    ref: str | None = None


class TypingNotice(msgspec.Struct, tag="TYPING", gc=False):
    roomId: int
    userId: str


ServerFrame = (
    RoomMessage | Messages | Ack | Subscribed | Unsubscribed | Error | SessionInfo | RoomCreated | Pong | TypingNotice
)
server_decoder = msgspec.json.Decoder(ServerFrame)


# Client frames -----------------------------------------------------------------------------


class Subscribe(msgspec.Struct, tag="SUBSCRIBE", omit_defaults=True):
    destination: str
    since: int | None = None
    ref: str | None = None


class Unsubscribe(msgspec.Struct, tag="UNSUBSCRIBE", omit_defaults=True):
    destination: str
    ref: str | None = None


class Send(msgspec.Struct, tag="SEND"):
    roomId: int
    text: str
    clientMsgId: str
    ref: str


class Ping(msgspec.Struct, tag="PING", omit_defaults=True):
    ref: str | None = None


class Typing(msgspec.Struct, tag="TYPING"):
    roomId: int


client_encoder = msgspec.json.Encoder()

ROOMS_TOPIC = "/topic/rooms"


def room_topic(room_id: int) -> str:
    return f"/topic/message/{room_id}"
