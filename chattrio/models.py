"""Typed records that cross the node's edges: Kafka events, stored messages, rooms."""

from __future__ import annotations

import hashlib
import uuid

import msgspec

MESSAGE_ID_NAMESPACE = uuid.UUID("5b0f6c0e-9d3f-4c1e-9a55-1f0c2d7a8e01")
_NAMESPACE_BYTES = MESSAGE_ID_NAMESPACE.bytes


class Room(msgspec.Struct, rename="camel", frozen=True):
    id: int
    name: str
    created_by: str
    created_at: str
    member_count: int = 0
    # Only in a signed-in user's room list (UNSET is left out of the JSON): how many chat messages
    # of others follow the user's read position (at most UNREAD_CAP), and that position.
    unread: int | msgspec.UnsetType = msgspec.UNSET
    last_read_seq: int | None | msgspec.UnsetType = msgspec.UNSET


class Message(msgspec.Struct, rename="camel", frozen=True):
    """A chat or system message as stored and as sent to clients."""

    id: str
    room_id: int
    seq: int
    sender_id: str
    kind: str  # "chat" | "join" | "leave"
    text: str
    client_msg_id: str | None
    sent_at: int  # broker timestamp, ms since the epoch


class ChatRecord(msgspec.Struct, frozen=True, array_like=True):
    """The value of a record on the messages topic; seq and sent_at come from Kafka."""

    id: str
    room_id: int
    sender_id: str
    kind: str
    text: str
    client_msg_id: str | None

    def to_message(self, seq: int, sent_at: int) -> Message:
        return Message(self.id, self.room_id, seq, self.sender_id, self.kind, self.text, self.client_msg_id, sent_at)


class UserCreated(msgspec.Struct, tag="user_created", rename="camel", frozen=True):
    event_id: str
    user_id: str
    created_at: str


class RoomCreated(msgspec.Struct, tag="room_created", rename="camel", frozen=True):
    event_id: str
    room: Room


class ReadPositionMoved(msgspec.Struct, tag="read_position", rename="camel", frozen=True):
    """A user's read position in a room moved forward (stored first; delivered to the user's sessions)."""

    event_id: str
    user_id: str
    room_id: int
    last_read_seq: int


DomainEvent = UserCreated | RoomCreated | ReadPositionMoved


class TypingRecord(msgspec.Struct, frozen=True, array_like=True):
    """The value of a record on the typing topic: a user is typing in a room (never stored)."""

    room_id: int
    user_id: str


class DeadLetter(msgspec.Struct, frozen=True):
    """A record the persistence group cannot store (undecodable, or refused by PostgreSQL), and why."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    value: bytes | None  # as read from Kafka, or a refused message's record re-encoded
    reason: str


chat_record_encoder = msgspec.json.Encoder()
chat_record_decoder = msgspec.json.Decoder(ChatRecord)
event_decoder = msgspec.json.Decoder(DomainEvent)
typing_record_decoder = msgspec.json.Decoder(TypingRecord)
message_decoder = msgspec.json.Decoder(Message)
json_encoder = msgspec.json.Encoder()


def message_id(sender_id: str, room_id: int, client_msg_id: str | None) -> str:
    """A retried send (same sender, room and clientMsgId) keeps its id on every node."""
    if client_msg_id is None:
        return str(uuid.uuid4())
    return _uuid5(f"{sender_id}\x00{room_id}\x00{client_msg_id}")


def _uuid5(name: str) -> str:
    """str(uuid.uuid5(MESSAGE_ID_NAMESPACE, name)) without building a UUID object: a third of the
    cost, on every SEND (docs/decisions/rooms-profile.md)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
