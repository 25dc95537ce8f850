"""RFC 6455 edges over a real socket to a real node: fragmentation, control frames inside a
fragmented message, invalid UTF-8, close codes, reserved bits, and the close handshake."""

from __future__ import annotations

import json
import struct
import uuid

import pytest
from client import login
from rawws import RawClient, masked_frame

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def _close(code: int, reason: bytes = b"") -> bytes:
    return masked_frame(OP_CLOSE, struct.pack("!H", code) + reason)


def _ping_json(ref: str) -> bytes:
    return json.dumps({"type": "PING", "ref": ref}).encode()


async def _client(url: str) -> RawClient:
    return await RawClient.connect(url, await login(url, f"rfc{uuid.uuid4().hex[:10]}"))


async def _close_code(client: RawClient) -> int:
    """The code of the server's close frame; data frames before it are skipped."""
    while True:
        opcode, payload = await client.next_frame()
        if opcode == OP_CLOSE:
            return struct.unpack("!H", payload[:2])[0]


@pytest.mark.parametrize(
    "raw, code",
    [
        (bytes([0xC1, 0x80]) + b"\x00" * 4, 1002),  # RSV1 without an extension
        (bytes([0xA1, 0x80]) + b"\x00" * 4, 1002),  # RSV2
        (bytes([0x91, 0x80]) + b"\x00" * 4, 1002),  # RSV3
        (masked_frame(0x3, b"x"), 1002),  # a reserved data opcode
        (masked_frame(0xB, b"x"), 1002),  # a reserved control opcode
        (masked_frame(OP_CONTINUATION, b"orphan"), 1002),  # a continuation of nothing
        (masked_frame(OP_TEXT, b"a", fin=False) + masked_frame(OP_TEXT, b"b"), 1002),  # a new message inside one
        (masked_frame(OP_PING, b"p", fin=False), 1002),  # a fragmented control frame
        (masked_frame(OP_PING, b"p" * 126), 1002),  # a control frame over 125 bytes
        (bytes([0x81, 0x05]) + b"hello", 1002),  # unmasked
        (masked_frame(OP_TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"), 1007),  # a surrogate
        (masked_frame(OP_TEXT, b"\xc3", fin=False) + masked_frame(OP_CONTINUATION, b"\x28"), 1007),  # split, invalid
        (masked_frame(OP_CLOSE, b"\x03"), 1002),  # a close payload of one byte
        (_close(1005), 1002),
        (_close(1006), 1002),
        (_close(1015), 1002),
        (_close(999), 1002),
        (_close(2999), 1002),
        (_close(1000, b"\xff"), 1007),  # a close reason that is not UTF-8
    ],
)
async def test_a_protocol_error_is_answered_with_its_close_code_then_the_socket_closes(cluster, raw, code):
    client = await _client(cluster.urls[0])
    await client.send_raw(raw)
    assert await _close_code(client) == code
    assert await client.at_end()  # a failed connection is not kept for a close handshake


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 3000, 4999])
async def test_a_valid_close_is_echoed_and_the_socket_closes(cluster, code):
    client = await _client(cluster.urls[1])
    await client.send_raw(_close(code, b"au revoir"))
    assert await _close_code(client) == code
    assert await client.at_end()


async def test_an_empty_close_is_answered_with_1000(cluster):
    client = await _client(cluster.urls[2])
    await client.send_raw(masked_frame(OP_CLOSE, b""))
    assert await _close_code(client) == 1000
    assert await client.at_end()


async def test_nothing_after_a_close_frame_is_handled(cluster):
    client = await _client(cluster.urls[0])
    await client.send_raw(_close(1000) + masked_frame(OP_TEXT, _ping_json("too-late")))
    opcodes = []
    while (frame := await client.next_frame())[0] != OP_CLOSE:
        opcodes.append((frame[0], json.loads(frame[1])["type"]))
    assert opcodes == [(OP_TEXT, "session-info")]  # no PONG for the PING after the close
    assert await client.at_end()


async def test_a_fragmented_message_with_pings_between_is_handled_and_each_ping_answered(cluster):
    client = await _client(cluster.urls[1])
    body = _ping_json("frag")
    await client.send_raw(
        masked_frame(OP_TEXT, body[:3], fin=False)
        + masked_frame(OP_PING, b"one")
        + masked_frame(OP_CONTINUATION, body[3:9], fin=False)
        + masked_frame(OP_PONG, b"unasked")
        + masked_frame(OP_CONTINUATION, b"", fin=False)
        + masked_frame(OP_PING, b"two")
        + masked_frame(OP_CONTINUATION, body[9:], fin=True)
    )
    reply, before = await client.reply_to("frag")
    assert reply == {"type": "PONG", "ref": "frag"}
    assert [p for op, p in before if op == OP_PONG] == [b"one", b"two"]


async def test_a_ping_of_125_bytes_is_echoed_exactly(cluster):
    client = await _client(cluster.urls[2])
    payload = bytes(range(125))
    await client.send_raw(masked_frame(OP_PING, payload))
    while (frame := await client.next_frame())[0] != OP_PONG:
        assert frame[0] == OP_TEXT
    assert frame[1] == payload


async def test_valid_utf8_split_mid_character_across_fragments_is_accepted(cluster):
    client = await _client(cluster.urls[0])
    body = json.dumps({"type": "PING", "ref": "κόσμε"}, ensure_ascii=False).encode()
    cut = body.index("ό".encode()) + 1  # inside the two bytes of "ό"
    await client.send_raw(masked_frame(OP_TEXT, body[:cut], fin=False) + masked_frame(OP_CONTINUATION, body[cut:]))
    reply, _ = await client.reply_to("κόσμε")
    assert reply == {"type": "PONG", "ref": "κόσμε"}


async def test_binary_and_too_many_fragments_are_errors_and_the_connection_stays(cluster):
    from chattrio.transport.websocket import MAX_FRAGMENTS

    client = await _client(cluster.urls[1])
    await client.send_raw(
        masked_frame(OP_BINARY, b"\x00\x01")
        + masked_frame(OP_TEXT, b"", fin=False)
        + masked_frame(OP_CONTINUATION, b"", fin=False) * MAX_FRAGMENTS
        + masked_frame(OP_CONTINUATION, b"{}")
        + masked_frame(OP_TEXT, _ping_json("after"))
    )
    reply, before = await client.reply_to("after")
    assert reply == {"type": "PONG", "ref": "after"}
    errors = [json.loads(p)["code"] for op, p in before if op == OP_TEXT and b'"ERROR"' in p]
    assert errors == ["BINARY_NOT_SUPPORTED", "TOO_LARGE"]
