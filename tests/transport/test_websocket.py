"""The server side of the WebSocket wire format: handshake key, frame encoding, FrameReader."""

from __future__ import annotations

import struct

import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import CloseConnection, Message, Ping, Pong, TextMessage

from chattrio.transport.websocket import (
    FrameReader,
    accept_key,
    close_frame,
    handshake_response,
    text_frame,
)

LIMIT = 1024


def _client() -> Connection:
    return Connection(ConnectionType.CLIENT)


def _client_read(data: bytes) -> list:
    """Parse server bytes as a client would (a client rejects anything malformed)."""
    client = _client()
    client.receive_data(data)
    return list(client.events())


def test_accept_key_matches_rfc6455_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_response():
    response = handshake_response("dGhlIHNhbXBsZSBub25jZQ==")
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert response.endswith(b"\r\n\r\n")
    lines = response.decode().split("\r\n")
    assert "Upgrade: websocket" in lines
    assert "Connection: Upgrade" in lines
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in lines
    assert not any(line.lower().startswith("sec-websocket-extensions") for line in lines)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_text_frame_lengths_are_encoded_correctly(size):
    payload = b"x" * size
    frame = text_frame(payload)
    assert frame[0] == 0x81  # FIN + text
    assert frame[1] & 0x80 == 0  # server frames are not masked
    header = 2 if size < 126 else 4 if size < 65536 else 10
    assert len(frame) == header + size
    events = _client_read(frame)
    assert len(events) == 1 and isinstance(events[0], TextMessage)
    assert events[0].data == payload.decode() and events[0].message_finished


def test_several_frames_concatenated_parse_in_order():
    data = b"".join(text_frame(f'{{"n": {n}}}'.encode()) for n in range(5))
    assert [e.data for e in _client_read(data)] == [f'{{"n": {n}}}' for n in range(5)]


def test_non_ascii_text_frame():
    events = _client_read(text_frame("안녕 😀".encode()))
    assert events[0].data == "안녕 😀"


def test_close_frame_carries_code_and_reason():
    frame = close_frame(1013, "too slow")
    assert frame[0] == 0x88
    assert struct.unpack("!H", frame[2:4]) == (1013,)
    events = _client_read(frame)
    assert isinstance(events[0], CloseConnection)
    assert (events[0].code, events[0].reason) == (1013, "too slow")


def test_close_frame_reason_is_bounded():
    frame = close_frame(1012, "r" * 500)
    assert len(frame) <= 2 + 125  # a control frame's payload is at most 125 bytes
    events = _client_read(frame)
    assert events[0].code == 1012 and events[0].reason == "r" * 120


def test_close_frame_truncation_keeps_valid_utf8():
    reason = "a" + "é" * 100  # 201 bytes, byte 120 is in the middle of an "é"
    events = _client_read(close_frame(1000, reason))
    assert isinstance(events[0], CloseConnection)
    assert events[0].code == 1000
    assert reason.startswith(events[0].reason)


# FrameReader: masked client frames in, complete messages out ---------------------------------


def _masked(*events) -> bytes:
    client = _client()
    return b"".join(client.send(event) for event in events)


def test_reader_returns_complete_text_messages():
    reader = FrameReader(LIMIT)
    messages, reply = reader.feed(_masked(Message(data='{"type": "PING"}')) + _masked(Message(data="second")))
    assert reply == b""
    assert [m.text for m in messages] == ['{"type": "PING"}', "second"]
    assert not any(m.too_large or m.binary for m in messages)


def test_reader_joins_fragments():
    reader = FrameReader(LIMIT)
    data = _masked(Message(data="hel", message_finished=False), Message(data="lo", message_finished=True))
    messages, _ = reader.feed(data[:5])
    assert messages == []
    messages, _ = reader.feed(data[5:])
    assert [m.text for m in messages] == ["hello"]


def test_reader_accepts_data_byte_by_byte():
    reader = FrameReader(LIMIT)
    data = _masked(Message(data="héllo"))
    got = []
    for i in range(len(data)):
        messages, _ = reader.feed(data[i : i + 1])
        got += messages
    assert [m.text for m in got] == ["héllo"]


def test_message_at_the_limit_is_accepted():
    reader = FrameReader(LIMIT)
    messages, _ = reader.feed(_masked(Message(data="x" * LIMIT)))
    assert len(messages) == 1 and messages[0].text == "x" * LIMIT and not messages[0].too_large


def test_limit_counts_utf8_bytes_not_characters():
    reader = FrameReader(LIMIT)
    messages, _ = reader.feed(_masked(Message(data="é" * (LIMIT // 2 + 1))))  # LIMIT + 2 bytes
    assert messages[0].too_large and messages[0].text is None


def test_message_over_the_limit_is_too_large_and_the_next_one_is_fine():
    reader = FrameReader(LIMIT)
    messages, _ = reader.feed(_masked(Message(data="x" * (LIMIT + 1)), Message(data="ok")))
    assert [(m.text, m.too_large) for m in messages] == [(None, True), ("ok", False)]


def test_fragmented_message_over_the_limit_is_too_large():
    reader = FrameReader(LIMIT)
    parts = [Message(data="x" * 400, message_finished=False) for _ in range(3)] + [Message(data="y")]
    messages, _ = reader.feed(_masked(*parts))
    assert len(messages) == 1 and messages[0].too_large and messages[0].text is None
    messages, _ = reader.feed(_masked(Message(data="after")))
    assert [m.text for m in messages] == ["after"]


def test_binary_message_is_flagged_and_the_next_text_is_fine():
    reader = FrameReader(LIMIT)
    messages, _ = reader.feed(_masked(Message(data=b"\x00\x01"), Message(data="text")))
    assert [(m.text, m.binary) for m in messages] == [(None, True), ("text", False)]


def test_large_binary_message_is_binary():
    reader = FrameReader(LIMIT)
    messages, _ = reader.feed(_masked(Message(data=b"z" * (LIMIT * 3))))
    assert len(messages) == 1 and messages[0].binary and messages[0].text is None


def test_ping_is_answered_with_a_pong():
    reader = FrameReader(LIMIT)
    messages, reply = reader.feed(_masked(Ping(payload=b"abc")))
    assert messages == []
    events = _client_read(reply)
    assert len(events) == 1 and isinstance(events[0], Pong) and events[0].payload == b"abc"


@pytest.mark.parametrize("code, expected", [(1000, 1000), (1001, 1001), (4000, 4000), (None, 1000)])
def test_peer_close_code_is_recorded(code, expected):
    reader = FrameReader(LIMIT)
    assert reader.peer_close_code is None
    messages, _ = reader.feed(_masked(CloseConnection(code=code) if code else CloseConnection(code=1005)))
    assert messages == []
    assert reader.peer_close_code == expected


def test_unmasked_client_frame_is_a_protocol_error():
    reader = FrameReader(LIMIT)
    messages, _ = reader.feed(text_frame(b"unmasked"))  # a server-style frame is not allowed from a client
    assert messages == []
    assert reader.peer_close_code == 1002


def test_invalid_utf8_in_a_text_message_closes_with_1007():
    reader = FrameReader(LIMIT)
    mask = b"\x00\x00\x00\x00"
    raw = bytes([0x81, 0x80 | 2]) + mask + b"\xc3\x28"  # masked text frame, invalid UTF-8
    messages, _ = reader.feed(raw)
    assert messages == []
    assert reader.peer_close_code == 1007


def test_ping_between_fragments_is_answered_and_the_message_completes():
    reader = FrameReader(LIMIT)
    data = _masked(Message(data="hel", message_finished=False), Ping(payload=b"p"), Message(data="lo"))
    messages, reply = reader.feed(data)
    assert [m.text for m in messages] == ["hello"]
    assert isinstance(_client_read(reply)[0], Pong)


def test_oversized_frame_is_skipped_as_it_streams_in():
    reader = FrameReader(LIMIT)
    data = _masked(Message(data="x" * (LIMIT * 50)), Message(data="after"))
    got = []
    for i in range(0, len(data), 700):
        messages, _ = reader.feed(data[i : i + 700])
        got += messages
        assert len(reader._buf) < 700 + 14  # never more than one read plus a header is held
    assert [(m.text, m.too_large) for m in got] == [(None, True), ("after", False)]


def test_fragmented_binary_message_is_binary():
    reader = FrameReader(LIMIT)
    data = _masked(Message(data=b"ab", message_finished=False), Message(data=b"cd"), Message(data="t"))
    messages, _ = reader.feed(data)
    assert [(m.text, m.binary) for m in messages] == [(None, True), ("t", False)]


def _raw_masked(first_byte: int, payload: bytes, length_byte: int | None = None) -> bytes:
    mask = b"\x00\x00\x00\x00"  # a zero mask leaves the payload as it is
    return bytes([first_byte, 0x80 | (len(payload) if length_byte is None else length_byte)]) + mask + payload


@pytest.mark.parametrize(
    "raw",
    [
        _raw_masked(0x80, b"orphan"),  # a continuation with no message started
        _raw_masked(0x01, b"part") + _raw_masked(0x81, b"new"),  # a new text message inside a fragmented one
        _raw_masked(0xC1, b"rsv1"),  # a reserved bit, with no extension negotiated
        _raw_masked(0x83, b"op3"),  # a reserved opcode
        _raw_masked(0x09, b"ping"),  # a fragmented control frame
        bytes([0x89, 0x80 | 126]) + struct.pack("!H", 126) + b"\x00" * 4 + b"p" * 126,  # control frame over 125
        bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 1 << 63) + b"\x00" * 4,  # a 64-bit length with the top bit set
        _raw_masked(0x88, b"\x03"),  # a close payload of one byte
        _raw_masked(0x88, struct.pack("!H", 1005)),  # a code a peer must not send
        _raw_masked(0x88, struct.pack("!H", 2000)),  # a reserved code
    ],
)
def test_protocol_errors_close_with_1002(raw):
    reader = FrameReader(LIMIT)
    messages, _ = reader.feed(raw)
    assert messages == []
    assert reader.peer_close_code == 1002


def test_close_reason_that_is_not_utf8_closes_with_1007():
    reader = FrameReader(LIMIT)
    reader.feed(_raw_masked(0x88, struct.pack("!H", 1000) + b"\xc3\x28"))
    assert reader.peer_close_code == 1007


def test_nothing_is_parsed_after_a_close():
    reader = FrameReader(LIMIT)
    messages, _ = reader.feed(_masked(CloseConnection(code=1000)) + _raw_masked(0x81, b"late"))
    assert messages == [] and reader.peer_close_code == 1000
    assert reader.feed(_raw_masked(0x81, b"later")) == ([], b"")


# Fragment caps: a message is capped in bytes and in frames ------------------------------------


def test_empty_continuation_frames_hold_no_memory_and_end_as_too_large():
    from chattrio.transport.websocket import MAX_FRAGMENTS

    reader = FrameReader(LIMIT)
    reader.feed(_raw_masked(0x01, b"start"))
    empty_continuation = _raw_masked(0x00, b"")
    for _ in range(MAX_FRAGMENTS * 3):
        messages, _ = reader.feed(empty_continuation)
        assert messages == []
    # the unfinished message holds its bytes only, whatever the number of frames
    assert reader._parts is None or len(reader._parts) <= LIMIT
    messages, _ = reader.feed(_raw_masked(0x80, b"end"))
    assert [(m.text, m.too_large) for m in messages] == [(None, True)]
    assert reader.peer_close_code is None
    messages, _ = reader.feed(_masked(Message(data="next")))
    assert [m.text for m in messages] == ["next"]


def test_a_message_of_max_fragments_frames_is_accepted():
    from chattrio.transport.websocket import MAX_FRAGMENTS

    reader = FrameReader(LIMIT)
    data = _raw_masked(0x01, b"") + _raw_masked(0x00, b"") * (MAX_FRAGMENTS - 2) + _raw_masked(0x80, b"ok")
    messages, _ = reader.feed(data)
    assert [(m.text, m.too_large) for m in messages] == [("ok", False)]


def test_one_fragment_more_than_max_fragments_is_too_large():
    from chattrio.transport.websocket import MAX_FRAGMENTS

    reader = FrameReader(LIMIT)
    data = _raw_masked(0x01, b"") + _raw_masked(0x00, b"") * (MAX_FRAGMENTS - 1) + _raw_masked(0x80, b"x")
    messages, _ = reader.feed(data)
    assert [(m.text, m.too_large) for m in messages] == [(None, True)]


def test_fragments_are_joined_in_one_bytearray():
    reader = FrameReader(LIMIT)
    reader.feed(_raw_masked(0x01, b"ab") + _raw_masked(0x00, b"cd"))
    assert isinstance(reader._parts, bytearray) and reader._parts == b"abcd"
    messages, _ = reader.feed(_raw_masked(0x80, b"e"))
    assert [m.text for m in messages] == ["abcde"]


def test_empty_first_fragment_then_final_fragment():
    reader = FrameReader(LIMIT)
    messages, _ = reader.feed(_raw_masked(0x01, b"") + _raw_masked(0x80, b"whole"))
    assert [m.text for m in messages] == ["whole"]


def test_invalid_utf8_split_across_fragments_closes_with_1007():
    reader = FrameReader(LIMIT)
    reader.feed(_raw_masked(0x01, b"\xc3") + _raw_masked(0x80, b"\x28"))
    assert reader.peer_close_code == 1007


def test_valid_utf8_split_across_fragments_is_joined():
    reader = FrameReader(LIMIT)
    encoded = "é".encode()
    messages, _ = reader.feed(_raw_masked(0x01, encoded[:1]) + _raw_masked(0x80, encoded[1:]))
    assert [m.text for m in messages] == ["é"]


# keep_binary and max_fragments: the test echo route's reader (CHATTRIO_TEST_ECHO) ----------------


def test_kept_binary_message_carries_its_payload_and_the_next_text_is_fine():
    reader = FrameReader(LIMIT, keep_binary=True)
    data = _masked(Message(data=b"\x00\x01", message_finished=False), Message(data=b"\xff"), Message(data="t"))
    messages, _ = reader.feed(data)
    assert [(m.data, m.text, m.binary, m.too_large) for m in messages] == [
        (b"\x00\x01\xff", None, True, False),
        (None, "t", False, False),
    ]


def test_kept_binary_message_over_the_limit_is_too_large_without_payload():
    reader = FrameReader(LIMIT, keep_binary=True)
    messages, _ = reader.feed(_masked(Message(data=b"z" * (LIMIT + 1)), Message(data=b"ok")))
    assert [(m.data, m.binary, m.too_large) for m in messages] == [(None, True, True), (b"ok", True, False)]


def test_binary_payload_is_not_kept_by_default():
    reader = FrameReader(LIMIT)
    messages, _ = reader.feed(_masked(Message(data=b"\x00\x01")))
    assert [(m.data, m.binary) for m in messages] == [(None, True)]


def test_max_fragments_is_the_readers_own():
    reader = FrameReader(LIMIT, max_fragments=3)
    three = _raw_masked(0x01, b"a") + _raw_masked(0x00, b"b") + _raw_masked(0x80, b"c")
    four = _raw_masked(0x01, b"a") + _raw_masked(0x00, b"b") * 2 + _raw_masked(0x80, b"c")
    messages, _ = reader.feed(three + four)
    assert [(m.text, m.too_large) for m in messages] == [("abc", False), (None, True)]
