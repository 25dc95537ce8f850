"""Hypothesis fuzz of client WebSocket frames: the parser alone (many examples, no I/O), then a
real node: a well-formed frame never gets INTERNAL and never loses the connection."""

from __future__ import annotations

import json
import uuid

import pytest
import trio
from client import connect, create_room, login
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawws import RawClient, masked_frame

from chattrio.transport.websocket import MAX_FRAGMENTS, FrameReader

LIMIT = 64 * 1024
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x9, 0xA

control_payloads = st.binary(max_size=125)
masks = st.binary(min_size=4, max_size=4)


TEXTS = st.text(max_size=300)


@st.composite
def fragmented_message(draw, text_strategy=TEXTS):
    """(text, frames): a text message split into fragments at byte positions (UTF-8 may be cut
    mid-character across frames), with pings and pongs between fragments."""
    text = draw(text_strategy)
    data = text.encode()
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    frames, pings = [], []
    for i, piece in enumerate(pieces):
        frames.append(
            masked_frame(OP_TEXT if i == 0 else OP_CONTINUATION, piece, fin=i == len(pieces) - 1, mask=draw(masks))
        )
        if i < len(pieces) - 1 and draw(st.booleans()):
            payload = draw(control_payloads)
            if draw(st.booleans()):
                frames.append(masked_frame(OP_PING, payload))
                pings.append(payload)
            else:
                frames.append(masked_frame(OP_PONG, payload))
    return text, b"".join(frames), pings


def _chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos = [], 0
    for size in sizes:
        if pos >= len(data):
            break
        out.append(data[pos : pos + size])
        pos += size
    if pos < len(data):
        out.append(data[pos:])
    return out


def _pongs(reply: bytes) -> list[bytes]:
    out = []
    while reply:
        assert reply[0] == 0x80 | OP_PONG
        length = reply[1]
        out.append(reply[2 : 2 + length])
        reply = reply[2 + length :]
    return out


# The parser alone -------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.lists(fragmented_message(), min_size=1, max_size=5), st.lists(st.integers(1, 300), max_size=40))
def test_reader_returns_every_well_formed_message_whatever_the_read_boundaries(messages, sizes):
    reader = FrameReader(LIMIT)
    stream = b"".join(frames for _, frames, _ in messages)
    got, pongs = [], []
    for chunk in _chunks(stream, sizes):
        texts, reply = reader.feed(chunk)
        got += texts
        pongs += _pongs(reply)
    assert reader.peer_close_code is None
    assert [m.text for m in got] == [text for text, _, _ in messages]
    assert pongs == [p for _, _, pings in messages for p in pings]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(1, 200), max_size=20))
def test_reader_never_raises_on_arbitrary_bytes(data, sizes):
    reader = FrameReader(LIMIT)
    for chunk in _chunks(data, sizes):
        texts, _ = reader.feed(chunk)
        assert all(m.text is not None or m.too_large or m.binary for m in texts)
    assert len(reader._buf) <= LIMIT + 14


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3 * MAX_FRAGMENTS), st.integers(0, 3))
def test_reader_bounds_any_number_of_fragments(count, size):
    reader = FrameReader(LIMIT)
    frames = masked_frame(OP_TEXT, b"a" * size, fin=False)
    frames += masked_frame(OP_CONTINUATION, b"b" * size, fin=False) * count
    texts, _ = reader.feed(frames + masked_frame(OP_CONTINUATION, b"", fin=True))
    assert reader.peer_close_code is None and len(texts) == 1
    assert texts[0].too_large == (count + 2 > MAX_FRAGMENTS)
    assert reader._parts is None


# A real node ------------------------------------------------------------------------------------

# Stand-ins for the id of a real room, put in when a frame is sent (a room of the test's own).
ROOM_TOKEN = "/topic/message/ROOM"
ROOM_ID_TOKEN = -4242424242

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
destinations = st.one_of(
    st.just("/topic/rooms"),
    st.just(ROOM_TOKEN),
    st.integers(-5, 10**20).map(lambda n: f"/topic/message/{n}"),
    st.text(max_size=40),
)
client_frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["SUBSCRIBE", "UNSUBSCRIBE", "SEND", "PING"]) | st.text(max_size=12)},
    optional={
        "destination": destinations | json_values,
        "since": st.integers(-(1 << 70), 1 << 70) | json_values,
        "roomId": st.just(ROOM_ID_TOKEN) | st.integers(-(1 << 70), 1 << 70) | json_values,
        "text": st.text(max_size=300) | json_values,
        "clientMsgId": st.text(max_size=80) | json_values,
        "ref": st.text(max_size=70) | json_values,
        "extra": json_values,
    },
)


async def _still_answers(client, marker: str) -> None:
    await client.send(type="PING", ref=marker)
    assert await client.wait_for(lambda f: f.get("ref") == marker) == {"type": "PONG", "ref": marker}
    assert client.closed is None


@pytest.fixture(scope="module")
def fuzz_room(shared_cluster) -> int:
    async def make() -> int:
        url = shared_cluster.urls[0]
        return (await create_room(url, await login(url, "fuzzowner"), "fuzz"))["id"]

    return trio.run(make)


def _with_room(frame: object, room_id: int) -> str:
    text = frame if isinstance(frame, str) else json.dumps(frame)
    return text.replace(ROOM_TOKEN, f"/topic/message/{room_id}").replace(str(ROOM_ID_TOKEN), str(room_id))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(client_frames | json_values | st.text(max_size=100), min_size=1, max_size=5))
async def test_a_node_never_answers_internal_nor_drops_the_connection(cluster, fuzz_room, frames):
    async with connect(cluster.urls[0], f"fz{uuid.uuid4().hex[:10]}") as client:
        for frame in frames:
            await client.ws.send_message(_with_room(frame, fuzz_room))
        await _still_answers(client, f"alive-{uuid.uuid4().hex[:6]}")
        assert not [f for f in client.frames if f["type"] == "ERROR" and f["code"] == "INTERNAL"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(empty=fragmented_message(st.just("")), cut_at=st.integers(1, 30), pings=st.lists(control_payloads, max_size=3))
async def test_a_node_answers_a_fragmented_ping_with_control_frames_between(cluster, empty, cut_at, pings):
    """An empty message in fragments (a BAD_FRAME), then a JSON PING cut in two with pings
    between the halves: every ping gets its pong, in order, then the PONG, and nothing closes."""
    _, empty_frames, empty_pings = empty
    ref = f"frag-{uuid.uuid4().hex[:6]}"
    body = json.dumps({"type": "PING", "ref": ref}).encode()
    data = (
        empty_frames
        + masked_frame(OP_TEXT, body[:cut_at], fin=False)
        + b"".join(masked_frame(OP_PING, p) for p in pings)
        + masked_frame(OP_CONTINUATION, body[cut_at:], fin=True)
    )
    url = cluster.urls[1]
    client = await RawClient.connect(url, await login(url, f"fr{uuid.uuid4().hex[:10]}"))
    try:
        await client.send_raw(data)
        reply, before = await client.reply_to(ref)
        assert reply == {"type": "PONG", "ref": ref}
        assert [payload for opcode, payload in before if opcode == OP_PONG] == empty_pings + pings
        texts = [json.loads(p) for opcode, p in before if opcode == OP_TEXT]
        assert [f.get("code") for f in texts if f["type"] == "ERROR"] == ["BAD_FRAME"]
        assert all(opcode != 0x8 for opcode, _ in before)
    finally:
        await client.stream.aclose()
