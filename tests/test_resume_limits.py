"""Resume edges on real nodes: `since` bounds, lastSeq never echoing `since`, a replay larger than
the send buffer, and the replay limit."""

from __future__ import annotations

import uuid

import httpx
import pytest
import trio
from client import connect, create_room, login

from chattrio.chat import REPLAY_LIMIT

INT64_MAX = (1 << 63) - 1


def _user(prefix: str = "r") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def _room(url: str) -> tuple[str, dict]:
    owner = _user("own")
    return owner, await create_room(url, await login(url, owner), f"resume-{uuid.uuid4().hex[:6]}")


# Sends in flight at once: the sender, in the room, receives its own messages too, and a window
# of the large ones (12 kB) stays well inside its 1 MiB send buffer however slowly it reads.
SEND_WINDOW = 40


async def _send_many(client, room_id: int, texts: list[str]) -> list[int]:
    """Send in windows, each answered and echoed back before the next; the acknowledged seqs."""
    refs = [f"m{uuid.uuid4().hex[:8]}-{n}" for n in range(len(texts))]
    for start in range(0, len(refs), SEND_WINDOW):
        window = refs[start : start + SEND_WINDOW]
        for ref, text in zip(window, texts[start : start + SEND_WINDOW]):
            await client.send(type="SEND", roomId=room_id, text=text, clientMsgId=ref, ref=ref)
        wanted = set(window)
        await client.wait_until(
            lambda wanted=wanted: (
                wanted <= {f.get("ref") for f in client.frames if f["type"] == "ACK"}
                and wanted <= {m["clientMsgId"] for m in client.messages(room_id)}
            ),
            timeout=60,
        )
    acks = {f["ref"]: f["seq"] for f in client.frames if f["type"] == "ACK"}
    return [acks[ref] for ref in refs]


async def _wait_stored(url: str, room_id: int, seq: int) -> None:
    """Until storage holds the message `seq` (storage is a prefix of each room's messages)."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        with trio.fail_after(60):
            while True:
                newest = (await http.get(f"/api/room/{room_id}/messages", params={"limit": 1})).json()["data"]
                if newest and newest[0]["seq"] >= seq:
                    return
                await trio.sleep(0.2)


async def _assert_alive(client, ref: str) -> None:
    await client.send(type="PING", ref=ref)
    assert await client.wait_for(lambda f: f.get("ref") == ref) == {"type": "PONG", "ref": ref}


@pytest.mark.parametrize("since", [1 << 63, -(1 << 63) - 1, 10**30])
async def test_since_outside_int64_is_a_bad_frame(cluster, since):
    _, room = await _room(cluster.urls[0])
    async with connect(cluster.urls[0], _user()) as client:
        reply = await client.subscribe(room["id"], since=since, ref="big")
        assert reply["type"] == "ERROR" and reply["code"] == "BAD_FRAME"
        await _assert_alive(client, "after-big")


@pytest.mark.parametrize("since", [INT64_MAX, -(1 << 63)])
async def test_since_at_the_int64_bounds_is_accepted(cluster, since):
    _, room = await _room(cluster.urls[1])
    async with connect(cluster.urls[1], _user()) as client:
        reply = await client.subscribe(room["id"], since=since, ref="edge")
        assert reply["type"] == "SUBSCRIBED"
        assert reply["lastSeq"] is None  # an empty room: nothing to claim, whatever since said


async def test_last_seq_is_the_rooms_not_the_clients_since(cluster):
    owner, room = await _room(cluster.urls[0])
    async with connect(cluster.urls[2], _user()) as watcher, connect(cluster.urls[0], owner) as sender:
        assert (await watcher.subscribe(room["id"]))["type"] == "SUBSCRIBED"
        assert (await sender.subscribe(room["id"]))["type"] == "SUBSCRIBED"
        (seq,) = await _send_many(sender, room["id"], ["only one"])
        # Delivered live on node 3: its fan-out has read the message.
        await watcher.wait_until(lambda: any(m["seq"] == seq for m in watcher.messages(room["id"])))
        # The room's last seq the node reports is that message's, or a later join (decided by
        # presence on its own time); never the client's since.
        async with connect(cluster.urls[2], _user()) as client:
            reply = await client.subscribe(room["id"], since=10**15, ref="ahead")
            assert reply["type"] == "SUBSCRIBED" and seq <= reply["lastSeq"] < 10**15
            assert client.messages(room["id"]) == []


async def test_a_node_started_after_a_rooms_messages_were_stored_claims_them_in_last_seq(make_cluster):
    """The room is quiet for the restarted node's fan-out: lastSeq comes from storage."""
    cluster = await make_cluster(1, leave_grace_seconds=600)  # no "left" during the test
    url = cluster.urls[0]
    owner, room = await _room(url)
    async with connect(url, owner) as sender:
        assert (await sender.subscribe(room["id"]))["type"] == "SUBSCRIBED"
        await sender.wait_until(lambda: sender.messages(room["id"], kind="join") != [])
        seqs = await _send_many(sender, room["id"], ["one", "two", "three"])
    await _wait_stored(url, room["id"], seqs[-1])
    node = cluster.nodes[0]
    node.terminate()
    node.start()
    await trio.to_thread.run_sync(node.wait_ready)
    async with connect(url, _user()) as client:
        reply = await client.subscribe(room["id"], ref="quiet")
        assert reply["type"] == "SUBSCRIBED" and reply["lastSeq"] == seqs[-1]
        assert client.messages(room["id"]) == []


async def test_a_replay_larger_than_the_send_buffer_arrives_whole(cluster):
    owner, room = await _room(cluster.urls[0])
    text = "€" * 4000  # 12 kB a frame: 300 of them are over three times the 1 MiB send buffer
    async with connect(cluster.urls[0], owner) as sender:
        assert (await sender.subscribe(room["id"]))["type"] == "SUBSCRIBED"
        seqs = await _send_many(sender, room["id"], [text] * 300)
    await _wait_stored(cluster.urls[1], room["id"], seqs[-1])
    async with connect(cluster.urls[1], _user()) as client:
        reply = await client.subscribe(room["id"], since=-1, ref="long")
        assert reply["type"] == "SUBSCRIBED", reply
        assert [m["seq"] for m in client.messages(room["id"])] == seqs
        assert all(m["text"] == text for m in client.messages(room["id"]))


async def test_a_resume_past_the_replay_limit_is_refused_with_a_clear_error(cluster):
    owner, room = await _room(cluster.urls[0])
    async with connect(cluster.urls[0], owner) as sender:
        assert (await sender.subscribe(room["id"]))["type"] == "SUBSCRIBED"
        seqs = await _send_many(sender, room["id"], [f"n{n}" for n in range(REPLAY_LIMIT + 1)])
    await _wait_stored(cluster.urls[2], room["id"], seqs[-1])
    async with connect(cluster.urls[2], _user()) as client:
        reply = await client.subscribe(room["id"], since=-1, ref="too-far")
        assert reply["type"] == "ERROR" and reply["code"] == "REPLAY_TOO_LONG"
        assert f"/api/room/{room['id']}/messages" in reply["message"]
        assert client.messages(room["id"]) == []  # nothing replayed before the error
        await _assert_alive(client, "after-too-far")
        # exactly the limit after since: replayed whole, then live
        reply = await client.subscribe(room["id"], since=seqs[0], ref="at-limit")
        assert reply["type"] == "SUBSCRIBED", reply
        assert [m["seq"] for m in client.messages(room["id"])] == seqs[1:]
        assert reply["lastSeq"] == seqs[-1]
        # refused again once in the room: the subscription stays, live messages still come
        reply = await client.subscribe(room["id"], since=-1, ref="too-far-again")
        assert reply["type"] == "ERROR" and reply["code"] == "REPLAY_TOO_LONG"
        async with connect(cluster.urls[0], owner) as sender:
            assert (await sender.subscribe(room["id"]))["type"] == "SUBSCRIBED"
            (late,) = await _send_many(sender, room["id"], ["after the refusal"])
        await client.wait_until(lambda: any(m["seq"] == late for m in client.messages(room["id"])))
