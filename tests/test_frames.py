"""Client frame parsing and the error codes it maps to; server frame encoding (docs/protocol.md)."""

from __future__ import annotations

import json

import pytest

from chattrio.frames import (
    AckFrame,
    ErrorFrame,
    FrameError,
    Ping,
    PongFrame,
    RoomCreatedFrame,
    RoomMessageFrame,
    Send,
    SessionInfo,
    Subscribe,
    SubscribedFrame,
    Unsubscribe,
    UnsubscribedFrame,
    encode_frame,
    parse_client_frame,
    room_id_of,
)
from chattrio.models import Message, Room


def _error(data) -> FrameError:
    with pytest.raises(FrameError) as exc:
        parse_client_frame(data)
    return exc.value


# Valid frames ---------------------------------------------------------------------------------


def test_documented_client_frames_parse():
    assert parse_client_frame('{"type": "SUBSCRIBE", "destination": "/topic/rooms", "ref": "r1"}') == Subscribe(
        "/topic/rooms", None, "r1"
    )
    assert parse_client_frame(
        '{"type": "SUBSCRIBE", "destination": "/topic/message/42", "since": 1000, "ref": "r2"}'
    ) == Subscribe("/topic/message/42", 1000, "r2")
    assert parse_client_frame('{"type": "UNSUBSCRIBE", "destination": "/topic/message/42", "ref": "r3"}') == (
        Unsubscribe("/topic/message/42", "r3")
    )
    send = parse_client_frame('{"type": "SEND", "roomId": 42, "text": "hi", "clientMsgId": "c-1", "ref": "r4"}')
    assert send == Send(42, "hi", "c-1", "r4")
    assert parse_client_frame(b'{"type": "PING", "ref": "r5"}') == Ping("r5")


def test_ref_and_client_msg_id_are_optional():
    assert parse_client_frame('{"type": "PING"}') == Ping(None)
    assert parse_client_frame('{"type": "SEND", "roomId": 1, "text": "x"}') == Send(1, "x", None, None)
    assert parse_client_frame('{"type": "SEND", "roomId": 1, "text": "x", "clientMsgId": null}').client_msg_id is None


def test_ref_of_64_characters_is_accepted():
    assert parse_client_frame(json.dumps({"type": "PING", "ref": "r" * 64})).ref == "r" * 64


# Errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        "",
        "{",
        "not json",
        '{"type": "PING"',
        "{'type': 'PING'}",
        b"\xff\xfe",
        '{"type": "PING"} trailing',
        '{"type": "SEND", "roomId": 1, "text": "\\ud800"}',
    ],
)
def test_not_json_is_bad_frame(data):
    err = _error(data)
    assert (err.code, err.message, err.ref) == ("BAD_FRAME", "frame is not valid JSON", None)


@pytest.mark.parametrize("data", ["[]", '[{"type": "PING"}]', '"PING"', "42", "null", "true"])
def test_not_an_object_is_bad_frame(data):
    err = _error(data)
    assert (err.code, err.message) == ("BAD_FRAME", "frame must be a JSON object")


@pytest.mark.parametrize(
    "data",
    [
        "{}",
        '{"ref": "r1"}',
        '{"type": 5, "ref": "r1"}',
        '{"type": null, "ref": "r1"}',
        '{"type": ["PING"], "ref": "r1"}',
    ],
)
def test_missing_or_non_string_type_is_bad_frame_with_ref(data):
    err = _error(data)
    assert err.code == "BAD_FRAME"
    assert "type" in err.message
    assert err.ref == ("r1" if "ref" in data else None)


@pytest.mark.parametrize("frame_type", ["HELLO", "ping", "Send", "", "MESSAGE", "x" * 1000])
def test_unknown_type(frame_type):
    err = _error(json.dumps({"type": frame_type, "ref": "r9"}))
    assert err.code == "UNKNOWN_TYPE"
    assert err.ref == "r9"
    assert len(err.message) < 100  # the unknown type is quoted, shortened


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "SEND", "roomId": "1", "text": "x"},
        {"type": "SEND", "roomId": 1.5, "text": "x"},
        {"type": "SEND", "roomId": 1.0, "text": "x"},
        {"type": "SEND", "roomId": True, "text": "x"},
        {"type": "SEND", "roomId": None, "text": "x"},
        {"type": "SEND", "roomId": 1, "text": 5},
        {"type": "SEND", "roomId": 1, "text": None},
        {"type": "SEND", "roomId": 1},
        {"type": "SEND", "text": "x"},
        {"type": "SEND", "roomId": 1, "text": "x", "clientMsgId": ""},
        {"type": "SEND", "roomId": 1, "text": "x", "clientMsgId": "c" * 65},
        {"type": "SEND", "roomId": 1, "text": "x", "clientMsgId": 7},
        {"type": "SUBSCRIBE"},
        {"type": "SUBSCRIBE", "destination": 42},
        {"type": "SUBSCRIBE", "destination": "/topic/message/1", "since": "10"},
        {"type": "SUBSCRIBE", "destination": "/topic/message/1", "since": 1.5},
        {"type": "UNSUBSCRIBE"},
        {"type": "UNSUBSCRIBE", "destination": None},
        {"type": "PING", "ref": "r" * 65},
    ],
)
def test_wrong_or_missing_fields_are_bad_frame(frame):
    frame.setdefault("ref", "r7")
    err = _error(json.dumps(frame))
    assert err.code == "BAD_FRAME"
    assert err.message.startswith(f"bad {frame['type']} frame")
    # the ref is echoed when it is a string (even one too long to be valid)
    assert err.ref == frame["ref"]


@pytest.mark.parametrize("ref", [5, ["r"], {"r": 1}, True])
def test_non_string_ref_is_bad_frame_without_ref(ref):
    err = _error(json.dumps({"type": "PING", "ref": ref}))
    assert err.code == "BAD_FRAME" and err.ref is None


def test_null_ref_means_no_ref():
    assert parse_client_frame('{"type": "PING", "ref": null}') == Ping(None)


# Destinations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "destination, room_id",
    [
        ("/topic/message/42", 42),
        ("/topic/message/0", 0),
        ("/topic/message/007", 7),
        ("/topic/message/" + "9" * 18, int("9" * 18)),
    ],
)
def test_room_destinations(destination, room_id):
    assert room_id_of(destination) == room_id


@pytest.mark.parametrize(
    "destination",
    [
        "/topic/rooms",
        "/topic/message/",
        "/topic/message/abc",
        "/topic/message/-1",
        "/topic/message/+1",
        "/topic/message/1.0",
        "/topic/message/ 1",
        "/topic/message/1 ",
        "/topic/message/1/2",
        "/topic/message/４２",
        "/topic/message/٤٢",
        "/topic/message/²",
        "/topic/message/" + "9" * 19,
        "/topic/messages/1",
        "topic/message/1",
        "",
        "/TOPIC/MESSAGE/1",
    ],
)
def test_bad_destinations(destination):
    assert room_id_of(destination) is None


# Server frames ---------------------------------------------------------------------------------

MESSAGE = Message("uuid-1", 42, 1017, "alice", "chat", "hi", "c-1", 1764072000123)
ROOM = Room(43, "general", "bob", "2025-11-25T12:00:00+00:00", 0)


@pytest.mark.parametrize(
    "frame, expected",
    [
        (
            SessionInfo("s1", "alice", "node-1"),
            {"type": "session-info", "sessionId": "s1", "userId": "alice", "nodeId": "node-1"},
        ),
        (
            RoomMessageFrame(MESSAGE),
            {
                "type": "ROOM_MESSAGE",
                "message": {
                    "id": "uuid-1",
                    "roomId": 42,
                    "seq": 1017,
                    "senderId": "alice",
                    "kind": "chat",
                    "text": "hi",
                    "clientMsgId": "c-1",
                    "sentAt": 1764072000123,
                },
            },
        ),
        (
            RoomCreatedFrame(ROOM),
            {
                "type": "ROOM_CREATED",
                "room": {
                    "id": 43,
                    "name": "general",
                    "createdBy": "bob",
                    "createdAt": "2025-11-25T12:00:00+00:00",
                    "memberCount": 0,
                },
            },
        ),
        (
            AckFrame("r7", "c-1", "uuid-1", 42, 1017),
            {"type": "ACK", "ref": "r7", "clientMsgId": "c-1", "id": "uuid-1", "roomId": 42, "seq": 1017},
        ),
        (
            SubscribedFrame("r3", "/topic/message/42", 1017),
            {"type": "SUBSCRIBED", "ref": "r3", "destination": "/topic/message/42", "lastSeq": 1017},
        ),
        (
            SubscribedFrame(None, "/topic/rooms", None),
            {"type": "SUBSCRIBED", "ref": None, "destination": "/topic/rooms", "lastSeq": None},
        ),
        (
            UnsubscribedFrame("r4", "/topic/message/42"),
            {"type": "UNSUBSCRIBED", "ref": "r4", "destination": "/topic/message/42"},
        ),
        (
            ErrorFrame("NOT_SUBSCRIBED", "enter room 42 before sending to it", "r7"),
            {"type": "ERROR", "code": "NOT_SUBSCRIBED", "message": "enter room 42 before sending to it", "ref": "r7"},
        ),
        (PongFrame("r9"), {"type": "PONG", "ref": "r9"}),
    ],
)
def test_server_frames_match_the_protocol(frame, expected):
    assert json.loads(encode_frame(frame)) == expected


def test_message_without_client_msg_id_encodes_null():
    message = Message("u", 1, 2, "bob", "join", "", None, 5)
    assert json.loads(encode_frame(RoomMessageFrame(message)))["message"]["clientMsgId"] is None
