"""`/ws?batch=1`: live messages of a room read in one fan-out cycle come in one MESSAGES frame;
a session without it gets ROOM_MESSAGE frames only (tests/unit/test_fanout_batches.py has the
fan-out's logic frame by frame)."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager

import httpx
import trio
from client import ChatClient, bearer, connect, create_room, login
from trio_websocket import open_websocket_url

BURST = 20  # the default SEND burst per connection: all of them go out at once
WS_HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def _user(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def _batching_client(base_url: str, user_id: str):
    token = await login(base_url, user_id)
    url = base_url.replace("http://", "ws://") + "/ws?batch=1"
    async with open_websocket_url(url, extra_headers=bearer(token)) as ws, trio.open_nursery() as nursery:
        client = ChatClient(ws, user_id)
        nursery.start_soon(client._read)
        await client.wait_for(lambda f: f["type"] == "session-info")
        yield client
        nursery.cancel_scope.cancel()


def _chat_messages(client: ChatClient, room_id: int) -> list[dict]:
    """Every message of the room in the order received, from both kinds of frame."""
    messages = []
    for frame in client.frames:
        if frame["type"] == "ROOM_MESSAGE":
            messages.append(frame["message"])
        elif frame["type"] == "MESSAGES":
            assert frame["roomId"] == room_id and len(frame["messages"]) >= 2, frame
            messages += frame["messages"]
    return [m for m in messages if m["roomId"] == room_id and m["kind"] == "chat"]


async def test_a_burst_reaches_batching_and_plain_sessions_complete_and_in_order(cluster):
    sender_id = _user("sender")
    token = await login(cluster.urls[0], sender_id)
    room = (await create_room(cluster.urls[0], token, f"batch-{uuid.uuid4().hex[:6]}"))["id"]
    async with (
        connect(cluster.urls[0], sender_id, token) as sender,
        _batching_client(cluster.urls[1], _user("batching")) as batching,
        connect(cluster.urls[1], _user("plain")) as plain,
    ):
        for client in (sender, batching, plain):
            assert (await client.subscribe(room))["type"] == "SUBSCRIBED"
        texts = [f"burst {i}" for i in range(BURST)]
        for i, text in enumerate(texts):  # all sent before any ACK is awaited
            await sender.send(type="SEND", roomId=room, text=text, clientMsgId=f"c{i}", ref=f"r{i}")
        for client in (batching, plain):
            await client.wait_until(lambda client=client: len(_chat_messages(client, room)) >= BURST)
        received = _chat_messages(batching, room)
        assert [m["text"] for m in received] == texts
        seqs = [m["seq"] for m in received]
        assert seqs == sorted(seqs) and len(set(seqs)) == BURST
        assert received == _chat_messages(plain, room)
        assert not any(f["type"] == "MESSAGES" for f in plain.frames)


async def test_a_batch_parameter_other_than_0_or_1_is_refused_with_400(cluster):
    token = await login(cluster.urls[0], _user("badbatch"))
    async with httpx.AsyncClient(base_url=cluster.urls[0], timeout=10) as http:
        response = await http.get("/ws?batch=yes", headers={**WS_HEADERS, "Authorization": f"Bearer {token}"})
    assert response.status_code == 400
    assert "batch must be 0 or 1" in response.json()["message"]
