"""WebSocket frames: client frames parsed and validated at the edge, server frames encoded once."""

from __future__ import annotations

from typing import Annotated

import msgspec

from chattrio.models import Message, Room

Ref = Annotated[str, msgspec.Meta(max_length=64)]
ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# Far above a real JWT (a few hundred bytes, some KiB with many claims), far below a frame.
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]
# A sequence is a Kafka offset, stored as a PostgreSQL bigint: anything outside int64 is refused here.
Seq = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]

ROOMS_DESTINATION = "/topic/rooms"
ROOM_DESTINATION_PREFIX = "/topic/message/"


class Subscribe(msgspec.Struct, tag="SUBSCRIBE", frozen=True):
    destination: str
    since: Seq | None = None
    ref: Ref | None = None


class Unsubscribe(msgspec.Struct, tag="UNSUBSCRIBE", frozen=True):
    destination: str
    ref: Ref | None = None


class Send(msgspec.Struct, tag="SEND", frozen=True, rename={"room_id": "roomId", "client_msg_id": "clientMsgId"}):
    room_id: int
    text: str
    client_msg_id: ClientMsgId | None = None
    ref: Ref | None = None


class Ping(msgspec.Struct, tag="PING", frozen=True):
    ref: Ref | None = None


class Read(msgspec.Struct, tag="READ", frozen=True, rename={"room_id": "roomId"}):
    """The client has shown the room's messages up to `seq`: the user's read position moves there."""

    room_id: int
    seq: Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]
    ref: Ref | None = None


class Typing(msgspec.Struct, tag="TYPING", frozen=True, rename={"room_id": "roomId"}):
    """The user is typing in the room (a client sends it at most every TYPING_INTERVAL seconds)."""

    room_id: int
    ref: Ref | None = None


class Auth(msgspec.Struct, tag="AUTH", frozen=True):
    """The first frame of a WebSocket opened without a header or cookie token."""

    token: Token
    ref: Ref | None = None


ClientFrame = Subscribe | Unsubscribe | Send | Ping | Read | Typing | Auth
KNOWN_TYPES = frozenset({"SUBSCRIBE", "UNSUBSCRIBE", "SEND", "PING", "READ", "TYPING", "AUTH"})


class FrameError(Exception):
    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.ref = code, message, ref


_client_decoder: msgspec.json.Decoder[ClientFrame] = msgspec.json.Decoder(ClientFrame)
_loose_decoder = msgspec.json.Decoder()


def parse_client_frame(data: str | bytes) -> ClientFrame:
    try:
        return _client_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise _explain(data, exc) from None


def _explain(data: str | bytes, exc: msgspec.DecodeError) -> FrameError:
    try:
        raw = _loose_decoder.decode(data)
    except msgspec.DecodeError:
        return FrameError("BAD_FRAME", "frame is not valid JSON")
    if not isinstance(raw, dict):
        return FrameError("BAD_FRAME", "frame must be a JSON object")
    ref = raw.get("ref") if isinstance(raw.get("ref"), str) else None
    frame_type = raw.get("type")
    if not isinstance(frame_type, str):
        return FrameError("BAD_FRAME", "frame needs a string field 'type'", ref)
    if frame_type not in KNOWN_TYPES:
        return FrameError("UNKNOWN_TYPE", f"unknown frame type {frame_type[:40]!r}", ref)
    return FrameError("BAD_FRAME", f"bad {frame_type} frame: {exc}", ref)


def room_id_of(destination: str) -> int | None:
    """The room of a `/topic/message/{roomId}` destination, None for anything else."""
    if not destination.startswith(ROOM_DESTINATION_PREFIX):
        return None
    tail = destination[len(ROOM_DESTINATION_PREFIX) :]
    if not tail.isascii() or not tail.isdigit() or len(tail) > 18:
        return None
    return int(tail)


# Server frames -------------------------------------------------------------------------------


class SessionInfo(msgspec.Struct, tag="session-info", rename="camel"):
    session_id: str
    user_id: str
    node_id: str


class RoomMessageFrame(msgspec.Struct, tag="ROOM_MESSAGE"):
    message: Message


class MessagesFrame(msgspec.Struct, tag="MESSAGES", rename="camel"):
    """Several live messages of one room, in order, for a session that asked for them batched."""

    room_id: int
    messages: list[Message]


class RoomCreatedFrame(msgspec.Struct, tag="ROOM_CREATED"):
    room: Room


class AckFrame(msgspec.Struct, tag="ACK", rename="camel"):
    ref: str | None
    client_msg_id: str | None
    id: str
    room_id: int
    seq: int


class SubscribedFrame(msgspec.Struct, tag="SUBSCRIBED", rename="camel"):
    ref: str | None
    destination: str
    last_seq: int | None


class UnsubscribedFrame(msgspec.Struct, tag="UNSUBSCRIBED"):
    ref: str | None
    destination: str


class ErrorFrame(msgspec.Struct, tag="ERROR", rename={"retry_after_ms": "retryAfterMs"}):
    code: str
    message: str
    ref: str | None = None
    # Only RATE_LIMITED carries it; UNSET is left out of the frame, so other errors are unchanged.
    retry_after_ms: int | msgspec.UnsetType = msgspec.UNSET


class PongFrame(msgspec.Struct, tag="PONG"):
    ref: str | None = None


class ReadPositionFrame(msgspec.Struct, tag="READ_POSITION", rename="camel"):
    room_id: int
    last_read_seq: int


class TypingFrame(msgspec.Struct, tag="TYPING", rename="camel"):
    room_id: int
    user_id: str


_server_encoder = msgspec.json.Encoder()


def encode_frame(frame: msgspec.Struct) -> bytes:
    return _server_encoder.encode(frame)
